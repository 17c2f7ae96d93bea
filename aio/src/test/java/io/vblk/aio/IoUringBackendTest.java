package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;


import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * io_uring specifics: a kernel that takes only part of the SQ per enter loses nothing; close
 * returns when its count says operations are in flight that the kernel does not owe.
 */
class IoUringBackendTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @Test
    void partialSubmissionKeepsTheRestInTheRing() throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(64L * BLOCK);
        }
        int depth = 64;
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth));
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            io.submitLimit(3);
            Recorder rec = new Recorder(depth);
            IoVector v = new IoVector(1);
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, i % 5 == 4 ? io.prepareFlush(i) : io.prepareWrite((long) i * BLOCK, v, i));
            }
            int submits = 0;
            while (io.pendingSubmit() > 0) {
                int before = io.pendingSubmit();
                int taken = io.submit();
                assertTrue(taken > 0 && taken <= 3, "took " + taken);
                assertEquals(before - taken, io.pendingSubmit());
                submits++;
            }
            assertEquals((depth + 2) / 3, submits);
            io.drain(rec);
            for (int i = 0; i < depth; i++) {
                assertEquals(i % 5 == 4 ? 0 : BLOCK, rec.result(i), "op " + i);
            }
        }
    }

    /**
     * IOSQE_ASYNC ({@code -Dvblk.uring.async}) is an experiment, off unless asked for: a ring
     * built by default issues its operations inline (no slot carries the flag), and the flag, when
     * asked for, joins the registered file's without replacing it.
     */
    @Test
    void operationsAreIssuedInlineUnlessAsyncIsAskedFor() throws IOException {
        assertEquals(IoUringDescriptor.SQE_FIXED_FILE | IoUringDescriptor.SQE_ASYNC, IoUringBackend.slotFlags(true, true));
        assertEquals(IoUringDescriptor.SQE_ASYNC, IoUringBackend.slotFlags(false, true));
        assertEquals(IoUringDescriptor.SQE_FIXED_FILE, IoUringBackend.slotFlags(true, false));
        assertEquals(0, IoUringBackend.slotFlags(false, false));
        Path path = dir.resolve("img");
        Files.write(path, new byte[8 * BLOCK]);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(8))) {
            for (int slot = 0; slot < 8; slot++) {
                assertEquals(0, io.sqeFlags(slot) & IoUringDescriptor.SQE_ASYNC, "slot " + slot);
            }
        }
    }

    /**
     * The image is the ring's registered file 0: every slot's SQE names index 0 with
     * IOSQE_FIXED_FILE (no per-operation descriptor lookup), and O_DIRECT writes and reads
     * through it reach the image itself: what is written through the ring is in the file, and
     * what the file holds is read back through the ring.
     */
    @Test
    void operationsNameTheImageAsRegisteredFileZero() throws IOException {
        int blocks = 32;
        Path path = dir.resolve("img");
        byte[] content = new byte[blocks * BLOCK];
        new Random(11).nextBytes(content);
        Files.write(path, content);
        int depth = 16;
        byte[] written;
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth));
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            assertTrue(io.registeredFile(), "Linux 5.1+ registers files; this kernel refused");
            for (int slot = 0; slot < depth; slot++) {
                assertEquals(IoUringDescriptor.SQE_FIXED_FILE, io.sqeFlags(slot) & IoUringDescriptor.SQE_FIXED_FILE, "slot " + slot);
                assertEquals(0, io.sqeFd(slot), "slot " + slot);
            }
            Recorder rec = new Recorder(blocks * 2);
            IoVector v = new IoVector(1);
            // Reads of blocks 0..15 into guest memory.
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, io.prepareRead((long) i * BLOCK, v, i));
            }
            io.submit();
            io.drain(rec);
            rec.assertAll(0, depth, BLOCK);
            for (int i = 0; i < depth; i++) {
                assertArrayEquals(java.util.Arrays.copyOfRange(content, i * BLOCK, (i + 1) * BLOCK), guest.copy(i * BLOCK, BLOCK),
                        "block " + i);
            }
            // Writes of new data over blocks 16..31.
            guest.fillRandom(0, depth * BLOCK, 7);
            written = guest.copy(0, depth * BLOCK);
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, io.prepareWrite((long) (depth + i) * BLOCK, v, depth + i));
            }
            io.submit();
            io.drain(rec);
            rec.assertAll(depth, 2 * depth, BLOCK);
        }
        byte[] after = Files.readAllBytes(path);
        assertEquals(blocks * BLOCK, after.length);
        assertArrayEquals(written, java.util.Arrays.copyOfRange(after, depth * BLOCK, blocks * BLOCK));
        assertArrayEquals(java.util.Arrays.copyOfRange(content, 0, depth * BLOCK), java.util.Arrays.copyOfRange(after, 0, depth * BLOCK));
    }

    /**
     * A transfer of one segment goes to the kernel as IORING_OP_READ/WRITE of that buffer (no
     * iovec); one of several segments as READV/WRITEV, and a bounced one (misaligned for
     * O_DIRECT) as a plain read of its bounce buffer. All move the right bytes.
     */
    @Test
    void oneSegmentIsAPlainReadOrWriteAndSeveralAreVectored() throws IOException {
        int blocks = 8;
        Path path = dir.resolve("img");
        byte[] content = new byte[blocks * BLOCK];
        new Random(5).nextBytes(content);
        Files.write(path, content);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(4));
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            Recorder rec = new Recorder(8);
            IoVector one = new IoVector(2);
            one.add(guest.address(0), BLOCK);
            assertEquals(0, io.prepareRead(BLOCK, one, 0));
            IoVector two = new IoVector(2);
            two.add(guest.address(2 * BLOCK), BLOCK);
            two.add(guest.address(4 * BLOCK), BLOCK);
            assertEquals(0, io.prepareRead(2L * BLOCK, two, 1));
            // Misaligned guest buffer: bounced through one aligned buffer, itself one segment.
            IoVector odd = new IoVector(2);
            odd.add(guest.address(6 * BLOCK) + 8, BLOCK);
            assertEquals(0, io.prepareRead(5L * BLOCK, odd, 2));
            io.submit();
            assertEquals(IoUringDescriptor.OP_READ, io.sqeOpcode(0));
            assertEquals(IoUringDescriptor.OP_READV, io.sqeOpcode(1));
            assertEquals(IoUringDescriptor.OP_READ, io.sqeOpcode(2));
            io.drain(rec);
            assertEquals(BLOCK, rec.result(0));
            assertEquals(2 * BLOCK, rec.result(1));
            assertEquals(BLOCK, rec.result(2));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, BLOCK, 2 * BLOCK), guest.copy(0, BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 2 * BLOCK, 3 * BLOCK), guest.copy(2 * BLOCK, BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 3 * BLOCK, 4 * BLOCK), guest.copy(4 * BLOCK, BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 5 * BLOCK, 6 * BLOCK), guest.copy(6 * BLOCK + 8, BLOCK));
            // A one-segment write lands in the file.
            guest.fillRandom(0, BLOCK, 9);
            byte[] written = guest.copy(0, BLOCK);
            assertEquals(0, io.prepareWrite(7L * BLOCK, one, 3));
            io.submit();
            assertEquals(IoUringDescriptor.OP_WRITE, io.sqeOpcode(3), "the fourth slot, first free (a FIFO of slots)");
            io.drain(rec);
            assertEquals(BLOCK, rec.result(3));
            assertArrayEquals(written, java.util.Arrays.copyOfRange(Files.readAllBytes(path), 7 * BLOCK, 8 * BLOCK));
        }
    }

    /**
     * Cooperative task running (Linux 5.19+): the kernel does not interrupt the submitting thread
     * to post its completions; a read finished while the thread spins in user space (no syscall)
     * waits, flagged in the SQ ring, and a poll posts it with one enter and reaps it. A poll that
     * only read the CQ would find it empty and this test would fail. Each try ends one of two
     * ways, depending on which vCPU took the disk's interrupt: flagged and not posted (the case
     * this is about), or already posted by an interrupt that returned to this thread.
     */
    @Test
    void aPollPostsCompletionsThatWaitForTheSubmittingThread() throws IOException {
        Path path = dir.resolve("img");
        byte[] content = new byte[64 * BLOCK];
        new Random(3).nextBytes(content);
        Files.write(path, content);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(4));
             GuestMemory guest = new GuestMemory(BLOCK)) {
            String[] version = System.getProperty("os.version").split("[.-]");
            int kernel = Integer.parseInt(version[0]) * 1000 + Integer.parseInt(version[1]);
            assertEquals(kernel >= 5019, io.cooperative(), "cooperative on Linux 5.19+, kernel " + System.getProperty("os.version"));
            org.junit.jupiter.api.Assumptions.assumeTrue(io.cooperative(), "kernel before 5.19");
            IoVector v = new IoVector(1);
            v.add(guest.address(0), BLOCK);
            int waited = 0;
            // Pinned to each CPU in turn: on the CPU that takes the disk's interrupt its return
            // posts the completion, on the others it waits for this thread.
            int cpus = Math.min(64, Runtime.getRuntime().availableProcessors());
            NativeBuffer mask = new NativeBuffer(Long.BYTES);
            try {
                for (int cpu = 0; cpu < cpus; cpu++) {
                    mask.buffer().putLong(0, 1L << cpu);
                    Native.libc().sched_setaffinity(0, Long.BYTES, mask.address());
                    for (int attempt = 0; attempt < 100; attempt++) {
                        waited += readOnce(io, guest, v, content, attempt % 64) ? 1 : 0;
                    }
                }
            } finally {
                mask.buffer().putLong(0, cpus == 64 ? -1L : (1L << cpus) - 1);
                Native.libc().sched_setaffinity(0, Long.BYTES, mask.address());
            }
            // Not a failure of the back end: every interrupt came back to this thread's vCPU.
            org.junit.jupiter.api.Assumptions.assumeTrue(waited > 0, "no completion waited for this thread in 400 reads");
        }
    }

    /**
     * Cooperative task running skips the interrupt to a running thread, never the wake-up of a
     * sleeping one: a thread that submits and then sleeps on the completion eventfd is woken by
     * the completion (an await that timed out instead would answer 0), on every CPU in turn.
     */
    @Test
    void aThreadSleepingForTheCompletionIsWoken() throws IOException {
        Path path = dir.resolve("img");
        byte[] content = new byte[64 * BLOCK];
        new Random(4).nextBytes(content);
        Files.write(path, content);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(4));
             GuestMemory guest = new GuestMemory(BLOCK)) {
            IoVector v = new IoVector(1);
            v.add(guest.address(0), BLOCK);
            int cpus = Math.min(64, Runtime.getRuntime().availableProcessors());
            NativeBuffer mask = new NativeBuffer(Long.BYTES);
            try {
                for (int cpu = 0; cpu < cpus; cpu++) {
                    mask.buffer().putLong(0, 1L << cpu);
                    Native.libc().sched_setaffinity(0, Long.BYTES, mask.address());
                    for (int attempt = 0; attempt < 20; attempt++) {
                        int block = attempt % 64;
                        assertEquals(0, io.prepareRead((long) block * BLOCK, v, 0));
                        assertEquals(1, io.submit());
                        assertEquals(1, io.awaitCompletions(30_000), "cpu " + cpu + ": the sleeping thread was woken");
                        Recorder rec = new Recorder(1);
                        long deadline = System.nanoTime() + 60_000_000_000L; // a hang guard (real I/O on a loaded machine)
                        while (io.poll(rec, 4) == 0) {
                            assertTrue(System.nanoTime() < deadline, "the read never finished");
                            io.awaitCompletions(100);
                        }
                        assertEquals(BLOCK, rec.result(0));
                        assertArrayEquals(java.util.Arrays.copyOfRange(content, block * BLOCK, (block + 1) * BLOCK), guest.copy(0, BLOCK));
                    }
                }
            } finally {
                mask.buffer().putLong(0, cpus == 64 ? -1L : (1L << cpus) - 1);
                Native.libc().sched_setaffinity(0, Long.BYTES, mask.address());
            }
        }
    }

    /** Reads {@code block} and reaps it with one poll; true if the completion waited for this thread. */
    private static boolean readOnce(IoUringBackend io, GuestMemory guest, IoVector v, byte[] content, int block) {
        assertEquals(0, io.prepareRead((long) block * BLOCK, v, 0));
        assertEquals(1, io.submit());
        long deadline = System.nanoTime() + 60_000_000_000L; // a hang guard (real I/O on a loaded machine)
        while (!io.completionsAwaitEntry() && !io.completionsPosted()) {
            assertTrue(System.nanoTime() < deadline, "the read never finished");
            Thread.onSpinWait();
        }
        boolean waited = io.completionsAwaitEntry() && !io.completionsPosted();
        if (waited) {
            assertTrue(io.hasQueuedCompletions(), "a completion waiting for this thread counts as queued (no sleep)");
        }
        Recorder rec = new Recorder(1);
        assertEquals(1, io.poll(rec, 4), "block " + block + (waited ? ", waiting for this thread" : "") + ": one poll reaps the read");
        assertEquals(BLOCK, rec.result(0));
        assertArrayEquals(java.util.Arrays.copyOfRange(content, block * BLOCK, (block + 1) * BLOCK), guest.copy(0, BLOCK));
        assertEquals(0, io.inFlight());
        return waited;
    }
}
