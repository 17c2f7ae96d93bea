package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.Errno;

/**
 * Issue 10: no long operation runs on the thread that submits or reaps. A write-zeroes of 256 MiB
 * that must be written as zeros (fallocate off) takes seconds; while it is in flight the same
 * thread keeps submitting and reaping reads and writes, on the same back end and on another one
 * (another queue of the same I/O thread), and afterwards the range reads as zeros. Linux AIO's
 * flush stays a kernel IOCB_CMD_FDSYNC on ext4 and tmpfs, and when a kernel refuses it the flush
 * goes to the helper thread, not the submitter.
 */
class OffloadTest {
    static final int BLOCK = 4096;
    /** Written as zeros (fallocate off): seconds of work here. */
    static final long BIG = 256L << 20;
    /** Through fallocate: a guest's largest single write-zeroes is 2 GiB. */
    static final long HUGE = 1L << 30;

    @TempDir
    Path dir;

    private Path sparse(String name, long bytes) throws IOException {
        Path path = dir.resolve(name);
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(bytes);
        }
        return path;
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void theSubmittingThreadKeepsServingWhileAHugeWriteZeroesRuns(BackendKind kind) throws IOException {
        Path big = sparse("big.img", BIG + 16 * BLOCK);
        Path other = sparse("other.img", 64 * BLOCK);
        byte[] marks = IoBackendTest.random(BLOCK, 7);
        // Data the zeroing must wipe: its first block, a block in the middle, its last block.
        for (long at : new long[] {0, BIG / 2, BIG - BLOCK}) {
            IoBackendTest.writeFile(big, at, marks);
        }
        IoBackendTest.writeFile(big, BIG, marks); // just past the range: must survive
        ImageOptions writtenZeros = ImageOptions.defaults().fallocate(false);
        int ops = 64;
        boolean otherFinishedFirst;
        int sameBackEndReads;
        try (Image bigImage = Image.open(big, writtenZeros);
             Image otherImage = Image.open(other, ImageOptions.defaults());
             IoBackend zeroing = IoBackends.open(kind, bigImage, 8);
             IoBackend serving = IoBackends.open(kind, otherImage, 8);
             GuestMemory buf = new GuestMemory(3 * BLOCK)) {
            Recorder zeroed = new Recorder(2 + ops);
            assertEquals(0, zeroing.prepareWriteZeroes(0, BIG, false, 0));
            assertTrue(zeroing.submit() >= 0);
            // The zeroing is in flight; this thread goes on with both back ends.
            Recorder served = new Recorder(2 * ops);
            int sameBackEnd = 0;
            for (int i = 0; i < ops; i++) {
                buf.fillRandom(0, BLOCK, i);
                assertEquals(0, serving.prepareWrite((long) (i % 64) * BLOCK, IoBackendTest.one(buf.address(0), BLOCK), 2 * i));
                IoBackendTest.submitAndDrain(serving, served);
                assertEquals(0, serving.prepareRead((long) (i % 64) * BLOCK, IoBackendTest.one(buf.address(BLOCK), BLOCK),
                        2 * i + 1));
                IoBackendTest.submitAndDrain(serving, served);
                assertArrayEquals(buf.copy(0, BLOCK), buf.copy(BLOCK, BLOCK), "read-back " + i);
                // The same back end takes reads while its zeroing runs (as many as it has slots:
                // the thread pool's workers may all be busy, which is back-pressure, not a stall).
                zeroing.poll(zeroed, 16);
                if (zeroing.freeSlots() > 0) {
                    assertEquals(0, zeroing.prepareRead(BIG + 8 * BLOCK, IoBackendTest.one(buf.address(2 * BLOCK), BLOCK),
                            2 + sameBackEnd++));
                    assertTrue(zeroing.submit() >= 0);
                }
            }
            otherFinishedFirst = !zeroed.seen(0);
            sameBackEndReads = sameBackEnd;
            served.assertAll(0, ops, BLOCK);
            assertTrue(zeroing.drain(zeroed) >= 0);
            assertEquals(0, zeroing.inFlight());
            zeroed.assertAll(0, 1, 0);
            zeroed.assertAll(2, 2 + sameBackEnd, BLOCK);
            assertTrue(sameBackEnd > 0);
            if (kind != BackendKind.THREADS) {
                // Linux AIO and io_uring have no asynchronous written-zeros: the helper did it.
                Thread helper = ((SlottedBackend) zeroing).offloadThread();
                assertNotNull(helper, "the zeroing went to the helper thread");
                assertNotSame(Thread.currentThread(), helper);
            }
        }
        byte[] zeros = new byte[BLOCK];
        for (long at : new long[] {0, BIG / 2, BIG - BLOCK}) {
            assertArrayEquals(zeros, IoBackendTest.readFile(big, at, BLOCK), "zeroed at " + at);
        }
        assertArrayEquals(marks, IoBackendTest.readFile(big, BIG, BLOCK), "the block after the range survives");
        System.out.println(kind + ": " + (2 * ops) + " transfers on another back end and " + sameBackEndReads
                + " on the same one completed " + (otherFinishedFirst ? "before" : "after") + " a 256 MiB written-zeros write-zeroes");
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void aHugeDiscardReadsAsZerosAndTheHelperChunksIt(BackendKind kind) throws IOException {
        Path big = sparse("big.img", HUGE);
        byte[] marks = IoBackendTest.random(BLOCK, 9);
        for (long at = 0; at < HUGE; at += Image.ZEROING_CHUNK_BYTES - BLOCK) {
            IoBackendTest.writeFile(big, at, marks);
        }
        try (Image image = Image.open(big, ImageOptions.defaults());
             IoBackend io = IoBackends.open(kind, image, 4)) {
            Recorder rec = new Recorder(3);
            assertEquals(0, io.prepareDiscard(0, HUGE / 2, 0));
            assertEquals(0, io.prepareWriteZeroes(HUGE / 2, HUGE / 2, false, 1));
            assertEquals(0, io.prepareFlush(2));
            IoBackendTest.submitAndDrain(io, rec);
            rec.assertAll(0, 3, 0);
        }
        byte[] zeros = new byte[BLOCK];
        for (long at = 0; at < HUGE; at += Image.ZEROING_CHUNK_BYTES - BLOCK) {
            assertArrayEquals(zeros, IoBackendTest.readFile(big, at, BLOCK), "zeroed at " + at);
        }
    }

    /**
     * The time one zeroing chunk ({@link Image.ZEROING_CHUNK_BYTES}) takes in each mode on this
     * filesystem, printed (not asserted: the machine is shared): the bound on how long a close
     * waits for a zeroing. Each chunk is checked to read as zeros.
     */
    @Test
    void eachZeroingChunkIsBoundedAndItsTimeIsPrinted() throws IOException {
        long chunk = Image.ZEROING_CHUNK_BYTES;
        Path path = sparse("chunks.img", 3 * chunk);
        byte[] marks = IoBackendTest.random(BLOCK, 11);
        StringBuilder report = new StringBuilder("zeroing chunk of " + (chunk >> 20) + " MiB:");
        String[] names = {"punch hole", "zero range", "written zeros"};
        int[] modes = {io.vblk.sys.Linux.FALLOC_FL_PUNCH_HOLE | io.vblk.sys.Linux.FALLOC_FL_KEEP_SIZE,
            io.vblk.sys.Linux.FALLOC_FL_ZERO_RANGE | io.vblk.sys.Linux.FALLOC_FL_KEEP_SIZE, 0};
        for (int i = 0; i < 3; i++) {
            IoBackendTest.writeFile(path, i * chunk + chunk - BLOCK, marks);
        }
        try (Image image = Image.open(path, ImageOptions.defaults())) {
            for (int i = 0; i < 3; i++) {
                long start = System.nanoTime();
                int rc = image.zeroRange(i * chunk, chunk, modes[i], i == 0, () -> false);
                long tookUs = (System.nanoTime() - start) / 1000;
                org.junit.jupiter.api.Assumptions.assumeTrue(rc != -Errno.EOPNOTSUPP, names[i] + " refused here");
                assertEquals(0, rc, names[i]);
                report.append(' ').append(names[i]).append(' ').append(tookUs).append(" us;");
            }
        }
        for (int i = 0; i < 3; i++) {
            assertArrayEquals(new byte[BLOCK], IoBackendTest.readFile(path, i * chunk + chunk - BLOCK, BLOCK), names[i]);
        }
        System.out.println(report);
    }

    @Test
    void linuxAioFlushIsAKernelFdsyncOnExt4AndTmpfs() throws IOException {
        Path shm = Path.of("/dev/shm");
        Path tmpfs = Files.isDirectory(shm) && Files.isWritable(shm) ? Files.createTempFile(shm, "vblk-offload", ".img") : null;
        try {
            for (Path path : tmpfs == null ? new Path[] {sparse("ext4.img", 64 * BLOCK)}
                    : new Path[] {sparse("ext4.img", 64 * BLOCK), tmpfs}) {
                if (path == tmpfs) {
                    try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
                        file.setLength(64 * BLOCK);
                    }
                }
                try (Image image = Image.open(path, ImageOptions.defaults().direct(path != tmpfs));
                     LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(4));
                     GuestMemory buf = new GuestMemory(BLOCK)) {
                    Recorder rec = new Recorder(2);
                    buf.fillRandom(0, BLOCK, 3);
                    assertEquals(0, io.prepareWrite(0, IoBackendTest.one(buf.address(0), BLOCK), 0));
                    IoBackendTest.submitAndDrain(io, rec);
                    assertEquals(0, io.prepareFlush(1));
                    IoBackendTest.submitAndDrain(io, rec);
                    rec.assertAll(1, 2, 0);
                    assertTrue(io.kernelFdsync(), "the kernel took IOCB_CMD_FDSYNC on " + path);
                    assertNull(io.offloadThread(), "no helper thread for a kernel flush on " + path);
                }
            }
        } finally {
            if (tmpfs != null) {
                Files.deleteIfExists(tmpfs);
            }
        }
        assumeTrue(tmpfs != null, "no writable /dev/shm: only ext4 checked");
    }

    @Test
    void aFlushTheKernelRefusesGoesToTheHelperThreadAndStaysDurable() throws IOException {
        Path path = sparse("img", 64 * BLOCK);
        LinuxAioBackend.SubmitCall refuseFdsync = (context, count, iocbArray) -> {
            long iocb = org.agrona.UnsafeApi.getLong(null, iocbArray);
            short opcode = org.agrona.UnsafeApi.getShort(null, iocb + LinuxAioDescriptor.IOCB_OPCODE_OFFSET);
            return opcode == LinuxAioDescriptor.IOCB_CMD_FDSYNC ? -Errno.EINVAL : LinuxAioBackend.IO_SUBMIT.submit(context, count, iocbArray);
        };
        try (Image image = Image.open(path, ImageOptions.defaults());
             LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(4), refuseFdsync, true);
             GuestMemory buf = new GuestMemory(BLOCK)) {
            Recorder rec = new Recorder(4);
            buf.fillRandom(0, BLOCK, 5);
            assertEquals(0, io.prepareWrite(0, IoBackendTest.one(buf.address(0), BLOCK), 0));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(0, io.prepareFlush(1));
            IoBackendTest.submitAndDrain(io, rec);
            rec.assertAll(0, 1, BLOCK);
            rec.assertAll(1, 2, 0);
            assertEquals(false, io.kernelFdsync());
            assertNotNull(io.offloadThread(), "the refused flush ran on the helper thread");
            // Later flushes go straight to the helper.
            assertEquals(0, io.prepareFlush(2));
            IoBackendTest.submitAndDrain(io, rec);
            rec.assertAll(2, 3, 0);
            assertArrayEquals(buf.copy(0, BLOCK), IoBackendTest.readFile(path, 0, BLOCK));
        }
    }

    @Test
    void closeCutsAHugeZeroingShortAndReturns() throws IOException {
        Path big = sparse("big.img", 4 * HUGE);
        try (Image image = Image.open(big, ImageOptions.defaults().fallocate(false))) {
            IoBackend io = IoBackends.open(BackendKind.LINUX_AIO, image, 4);
            assertEquals(0, io.prepareWriteZeroes(0, 4 * HUGE, false, 0));
            assertTrue(io.submit() >= 0);
            // Writing 4 GiB of zeros would take many seconds: close stops at the next chunk.
            io.close();
            assertEquals(0, io.inFlight());
            assertEquals(-Errno.EBADF, io.prepareFlush(1));
        }
    }
}
