package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.Errno;
import io.vblk.sys.Mapping;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;

/**
 * Issue 10's last gap: a bounce copy from (or into) guest memory that a frontend truncated
 * under its mapping. Before the kernel copies ({@link BounceCopier}) the copy raised SIGBUS; in
 * JIT-compiled code HotSpot threw the InternalError late, inside the reap, where it broke the
 * back end's in-flight count and the engine's drain waited for ever (engine FaultPointTest,
 * BOUNCE_COPY, hot). Now exactly the operation whose memory was cut fails with EFAULT, at once,
 * on every native back end, in hot code (the path is warmed first), and the others in its batch
 * complete with their data.
 */
class GuestFaultBounceTest {
    private static final int BLOCK = 4096;
    private static final int WARM_UP_BATCHES = Integer.getInteger("bounce.warmup", 3_000);

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void aBounceCopyFromATruncatedMemfdFailsThatOneWriteWithEfaultInHotCode(BackendKind kind) throws IOException {
        Path path = newFile(64L * BLOCK);
        int fd = Memfd.create("cut", 4L * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(16 * BLOCK);
             Mapping cut = Mapping.map(fd, 0, 4L * BLOCK, false, false)) {
            assumeTrue(image.memoryAlignment() > 1, "nothing is bounced without O_DIRECT");
            IoBackend io = IoBackends.open(kind, image, 8);
            try {
                assertTrue(!(io instanceof SlottedBackend) || ((SlottedBackend) io).kernelCopy(), "kernel copies in use");
                guest.fillRandom(0, 8 * BLOCK, 7);
                // Hot: the same bounced batch many times, so the copy and reap paths are compiled.
                for (int b = 0; b < WARM_UP_BATCHES; b++) {
                    for (int i = 0; i < 4; i++) {
                        assertEquals(0, io.prepareWrite((long) i * BLOCK, misaligned(guest.address(i * 2 * BLOCK)), 100 + i));
                    }
                    Recorder warm = new Recorder(128);
                    io.submit();
                    io.drain(warm);
                    warm.assertAll(100, 104, BLOCK);
                }
                new UnsafeBuffer(cut.address(), 4 * BLOCK).setMemory(0, 4 * BLOCK, (byte) 5);
                assertEquals(0, Native.libc().ftruncate(fd, 0)); // the frontend cuts the file

                Recorder rec = new Recorder(8);
                assertEquals(0, io.prepareWrite(8L * BLOCK, misaligned(guest.address(0)), 0));
                assertEquals(0, io.prepareWrite(9L * BLOCK, misaligned(cut.address() + BLOCK), 1));
                assertEquals(0, io.prepareWrite(10L * BLOCK, misaligned(guest.address(2 * BLOCK)), 2));
                io.submit();
                io.drain(rec);
                assertEquals(BLOCK, rec.result(0));
                assertEquals(-Errno.EFAULT, rec.result(1));
                assertEquals(BLOCK, rec.result(2));
                assertEquals(0, io.inFlight());
                assertEquals(0, io.pendingSubmit());
                assertEquals(8, io.freeSlots(), "every slot back");
                byte[] expected = guest.copy(8, BLOCK);
                assertArrayEquals(expected, IoBackendTest.readFile(path, 8L * BLOCK, BLOCK));
                assertArrayEquals(new byte[BLOCK], IoBackendTest.readFile(path, 9L * BLOCK, BLOCK), "the failed write wrote nothing");
            } finally {
                io.close();
            }
        } finally {
            Native.libc().close(fd);
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void aBounceCopyBackIntoATruncatedMemfdFailsThatOneReadWithEfault(BackendKind kind) throws IOException {
        Path path = newFile(64L * BLOCK);
        byte[] data = IoBackendTest.random(4 * BLOCK, 3);
        IoBackendTest.writeFile(path, 0, data);
        int fd = Memfd.create("cut", 4L * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(16 * BLOCK);
             Mapping cut = Mapping.map(fd, 0, 4L * BLOCK, false, false)) {
            assumeTrue(image.memoryAlignment() > 1, "nothing is bounced without O_DIRECT");
            IoBackend io = IoBackends.open(kind, image, 8);
            try {
                for (int b = 0; b < WARM_UP_BATCHES / 3; b++) {
                    for (int i = 0; i < 4; i++) {
                        assertEquals(0, io.prepareRead((long) i * BLOCK, misaligned(guest.address(i * 2 * BLOCK)), 100 + i));
                    }
                    Recorder warm = new Recorder(128);
                    io.submit();
                    io.drain(warm);
                    warm.assertAll(100, 104, BLOCK);
                }
                assertEquals(0, Native.libc().ftruncate(fd, 0));
                Recorder rec = new Recorder(8);
                assertEquals(0, io.prepareRead(0, misaligned(guest.address(0)), 0));
                assertEquals(0, io.prepareRead(BLOCK, misaligned(cut.address()), 1));
                assertEquals(0, io.prepareRead(2L * BLOCK, misaligned(guest.address(4 * BLOCK)), 2));
                io.submit();
                io.drain(rec);
                assertEquals(BLOCK, rec.result(0));
                assertEquals(-Errno.EFAULT, rec.result(1));
                assertEquals(BLOCK, rec.result(2));
                assertEquals(0, io.inFlight());
                assertEquals(8, io.freeSlots(), "every slot back");
                byte[] want = new byte[BLOCK];
                System.arraycopy(data, 0, want, 0, BLOCK);
                assertArrayEquals(want, guest.copy(8, BLOCK));
                System.arraycopy(data, 2 * BLOCK, want, 0, BLOCK);
                assertArrayEquals(want, guest.copy(4 * BLOCK + 8, BLOCK));
            } finally {
                io.close();
            }
        } finally {
            Native.libc().close(fd);
        }
    }

    /** One segment at {@code address + 8}: misaligned for O_DIRECT, so it is bounced. */
    private static IoVector misaligned(long address) {
        IoVector v = new IoVector(4);
        v.add(address + 8, BLOCK);
        return v;
    }

    private Path newFile(long sizeBytes) throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(sizeBytes);
        }
        return path;
    }
}
