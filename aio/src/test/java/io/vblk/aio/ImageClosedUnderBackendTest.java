package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.PosixFile;

/**
 * An embedder that closes an {@link Image} while its back end still runs (a device not yet
 * closed): the Linux AIO iocbs and io_uring's SQEs without a registered file carry the image's
 * descriptor by number, and the next file the process opens takes that number. A write the
 * guest sent after the close then landed in that other file. Now every back end holds its image
 * for its life: the image's close is deferred (and returns at once), the write reaches the
 * image's own file, and the back end's close really closes it (no descriptor left on it). Real
 * files, real io_uring and Linux AIO; B is opened right after the close, where the kernel hands
 * out the lowest free number, the one the image had before the fix.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS) // a hang guard: the image's close must not wait for the back end
class ImageClosedUnderBackendTest {
    private static final int SIZE = 64 << 10;
    private static final int BLOCK = 4096;
    private static final byte FILL = 0x5a;

    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"io_uring-unregistered", "io_uring", "linux-aio", "threads"})
    void aWriteAfterTheImageClosedNeverLandsInTheFileThatTookItsNumber(String kind) throws Exception {
        assumeTrue(Image.LINUX);
        Path pathA = dir.resolve("a");
        Path pathB = dir.resolve("b");
        Files.write(pathA, IoBackendTest.random(SIZE, 1));
        Files.write(pathB, IoBackendTest.random(SIZE, 2));
        byte[] contentA = Files.readAllBytes(pathA);
        byte[] contentB = Files.readAllBytes(pathB);

        Image image = Image.open(pathA, ImageOptions.defaults());
        int number = image.fd();
        IoBackend io = open(kind, image);
        try {
            image.injectFlushErrno = Errno.EIO; // marks whether the final fdatasync ran (it consumes it)
            image.close(); // the embedder's close, the device still running: returns at once
            assertTrue(image.isClosed());
            assertThrows(IllegalStateException.class, image::fd, "closed for its users");

            try (PosixFile b = PosixFile.open(pathB, false, false)) {
                // Before the fix B took A's number (the lowest free one) and the write below landed in B.
                NativeBuffer data = new NativeBuffer(BLOCK, BLOCK);
                data.buffer().setMemory(0, BLOCK, FILL);
                IoVector v = new IoVector(1);
                v.add(data.address(), BLOCK);
                assertEquals(0, io.prepareWrite(0, v, 0));
                Recorder rec = new Recorder(4);
                io.drain(rec);
                long result = rec.result(0);
                assertArrayEquals(contentB, Files.readAllBytes(pathB), kind + ": B untouched");
                byte[] nowA = Files.readAllBytes(pathA);
                if (result == BLOCK) {
                    byte[] written = new byte[BLOCK];
                    Arrays.fill(written, FILL);
                    assertArrayEquals(written, Arrays.copyOf(nowA, BLOCK), kind + ": the write went to A");
                } else {
                    assertTrue(result < 0, kind + ": a clean failure, not " + result);
                    assertArrayEquals(contentA, nowA, kind + ": a failed write left A as it was");
                }
                assertTrue(b.fd() != number, "A's number is still A's: B got another one");
                assertTrue(descriptorsOn(pathA) >= 1, "the back end still holds A's descriptor open");
                assertEquals(Errno.EIO, image.injectFlushErrno, "no fdatasync while a back end holds the image");
            }
        } finally {
            io.close();
        }
        assertTrue(io.closedDrained());
        assertEquals(0, image.holds(), "every hold released once");
        assertEquals(0, descriptorsOn(pathA), "the back end's close really closed A's descriptor");
        assertEquals(0, image.injectFlushErrno, "the deferred close ran its final fdatasync");
        image.close();
        io.close();
        assertEquals(0, image.holds(), "a second close of either changes nothing");
        assertEquals(0, descriptorsOn(pathA));
    }

    @ParameterizedTest
    @ValueSource(strings = {"io_uring-unregistered", "linux-aio", "threads", "null"})
    void theImageClosesAtOnceWhenItsBackEndWasClosedFirst(String kind) throws Exception {
        assumeTrue(Image.LINUX);
        Path pathA = dir.resolve("a");
        Files.write(pathA, IoBackendTest.random(SIZE, 3));
        Image image = Image.open(pathA, ImageOptions.defaults());
        IoBackend io = open(kind, image);
        assertEquals(1, image.holds());
        io.close();
        assertEquals(0, image.holds());
        assertTrue(descriptorsOn(pathA) >= 1, "open until the image's own close");
        image.close();
        assertEquals(0, descriptorsOn(pathA));
        assertThrows(IllegalArgumentException.class, () -> open(kind, image), "no back end on a closed image");
        assertEquals(0, image.holds());
    }

    /**
     * An undrained close: the kernel still holds a read (a hung disk, played here by a submit
     * call that only pretends to hand the iocb over; the test hands it over itself later, the
     * kernel then finishing late). The embedder's image close returns at once; the image stays
     * open through the back end's undrained close; once the reaper saw the kernel finish, its
     * release really closes the image, once, and without the final fdatasync (the reaper must
     * not wait on a file that just hung). Real Linux AIO on a real file.
     */
    @Test
    void anUndrainedBackEndKeepsTheImageUntilItsReaperReleasesIt() throws Exception {
        assumeTrue(Image.LINUX);
        Path pathA = dir.resolve("a");
        Files.write(pathA, IoBackendTest.random(SIZE, 4));
        long[] held = new long[2]; // the context and the one iocb the "kernel" kept
        LinuxAioBackend.SubmitCall hung = (context, count, iocbArray) -> {
            held[0] = context;
            held[1] = org.agrona.UnsafeApi.getLong(iocbArray);
            return 1;
        };
        System.setProperty(CLOSE_DRAIN_PROPERTY, "100");
        NativeBuffer data = new NativeBuffer(BLOCK, BLOCK);
        Image image = Image.open(pathA, ImageOptions.defaults());
        LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(4), hung, true);
        IoVector v = new IoVector(1);
        v.add(data.address(), BLOCK);
        assertEquals(0, io.prepareRead(0, v, 0));
        assertEquals(1, io.submit());
        assertEquals(1, io.inFlight());

        image.injectFlushErrno = Errno.EIO; // consumed only by a final fdatasync
        image.close(); // the embedder first: returns at once
        io.close(); // waits 100 ms, then returns undrained
        assertFalse(io.closedDrained(), "the read is still with the kernel");
        assertEquals(1, image.holds(), "the undrained back end still holds the image");
        assertTrue(descriptorsOn(pathA) >= 1, "A's descriptor stays open while the kernel may still use its number");

        NativeBuffer array = new NativeBuffer(Long.BYTES);
        array.buffer().putLong(0, held[1]);
        assertEquals(1, Native.syscall(Linux.SYS_IO_SUBMIT, held[0], 1, array.address(), 0, 0),
                "the kernel takes the held read now");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!io.closedDrained() || descriptorsOn(pathA) != 0) {
            assertTrue(System.nanoTime() < deadline, "the reaper never released the back end and its image");
            Thread.sleep(5);
        }
        assertEquals(0, image.holds(), "the hold released once");
        assertEquals(Errno.EIO, image.injectFlushErrno, "no final fdatasync on the reaper");
        image.close();
        assertEquals(0, image.holds());
        java.lang.ref.Reference.reachabilityFence(data);
        java.lang.ref.Reference.reachabilityFence(array);
    }

    @AfterEach
    void clearDrainProperty() {
        System.clearProperty(CLOSE_DRAIN_PROPERTY);
    }

    private static final String CLOSE_DRAIN_PROPERTY = "vblk.aio.closeDrainMs";

    private static IoBackend open(String kind, Image image) {
        switch (kind) {
            case "io_uring-unregistered":
                IoUringBackend ring = new IoUringBackend(image, BackendOptions.depth(4), false);
                assertFalse(ring.registeredFile(), "SQEs carry the descriptor's number");
                return ring;
            case "io_uring":
                return new IoUringBackend(image, BackendOptions.depth(4));
            case "linux-aio":
                return new LinuxAioBackend(image, BackendOptions.depth(4));
            case "threads":
                return new ThreadPoolBackend(image, BackendOptions.depth(4));
            default:
                return new NullBackend(image, BackendOptions.depth(4));
        }
    }

    /** How many of this process's descriptors name {@code path} (/proc/self/fd). */
    static long descriptorsOn(Path path) throws IOException {
        Path real = path.toRealPath();
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.filter(fd -> {
                try {
                    return Files.readSymbolicLink(fd).equals(real);
                } catch (IOException gone) {
                    return false; // the listing's own descriptor, closed meanwhile
                }
            }).count();
        }
    }
}
