package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * The single-issuer ring ({@link BackendOptions#singleIssuer()}: SINGLE_ISSUER, DEFER_TASKRUN,
 * started disabled) on a real kernel ring and a real O_DIRECT file: built on one thread, owned by
 * the thread that first enters it; the kernel refuses every other thread's submissions; its
 * completions wait for the owner's enter and still signal the completion eventfd; a table
 * registered from another thread reaches the ring through a staging ring; a close from another
 * thread with operations in flight returns; a kernel that refuses the flags gets the usual ring.
 * Also the ring sizes at the largest depths.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard, not a timed assertion
class IoUringSingleIssuerTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    private ExecutorService ownerThread;
    private byte[] content;

    @BeforeEach
    void start() {
        ownerThread = Executors.newSingleThreadExecutor(r -> new Thread(r, "ring-owner"));
    }

    @AfterEach
    void stop() {
        ownerThread.shutdownNow();
    }

    private Image image(int blocks) throws IOException {
        Path path = dir.resolve("img");
        content = new byte[blocks * BLOCK];
        new Random(11).nextBytes(content);
        Files.write(path, content);
        return Image.open(path, ImageOptions.defaults().direct(true));
    }

    private <T> T onOwner(java.util.concurrent.Callable<T> task) throws Exception {
        try {
            return ownerThread.submit(task).get(60, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof Error) {
                throw (Error) e.getCause();
            }
            throw e;
        }
    }

    private static IoUringBackend singleIssuer(Image image, int depth) {
        IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth).singleIssuer(true));
        // Linux 6.1 has DEFER_TASKRUN; before it the back end falls back (tested below).
        Assumptions.assumeTrue(io.singleIssuer() || !kernelAtLeast(6, 1), "6.1+ must accept SINGLE_ISSUER|DEFER_TASKRUN");
        if (!io.singleIssuer()) {
            io.close();
            Assumptions.abort("kernel before 6.1");
        }
        return io;
    }

    static boolean kernelAtLeast(int major, int minor) {
        String[] v = System.getProperty("os.version").split("[.-]");
        int kernel = Integer.parseInt(v[0]) * 1000 + Integer.parseInt(v[1]);
        return kernel >= major * 1000 + minor;
    }

    /** Reads {@code block} into {@code address} and reaps it (owner thread); returns the result. */
    private static long readAndReap(IoUringBackend io, long address, int block) {
        IoVector v = new IoVector(1);
        v.add(address, BLOCK);
        assertEquals(0, io.prepareRead((long) block * BLOCK, v, block));
        assertEquals(1, io.submit());
        Recorder rec = new Recorder(1024);
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (io.poll(rec, 4) == 0) {
            assertTrue(System.nanoTime() < deadline, "the read never completed");
            io.awaitCompletions(100);
        }
        return rec.result(block);
    }

    @Test
    void theThreadThatEntersFirstOwnsTheRingAndTheKernelRefusesEveryOtherSubmitter() throws Exception {
        try (Image image = image(16);
             IoUringBackend io = singleIssuer(image, 4);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            assertNull(io.owner(), "built disabled: nobody owns it yet");
            assertEquals((long) BLOCK, (long) onOwner(() -> readAndReap(io, guest.address(0), 3)));
            assertArrayEquals(Arrays.copyOfRange(content, 3 * BLOCK, 4 * BLOCK), guest.copy(0, BLOCK));
            Thread owner = onOwner(Thread::currentThread);
            assertSame(owner, io.owner());
            // The kernel enforces it (the flag is real): this thread's submission is refused,
            // and what it queued stays queued, not lost.
            IoVector v = new IoVector(1);
            v.add(guest.address(0), BLOCK);
            assertEquals(0, io.prepareRead(0, v, 7));
            assertEquals(-Errno.EEXIST, io.submit());
            assertEquals(1, io.pendingSubmit());
            Recorder rec = new Recorder(16);
            assertEquals(1, (int) onOwner(() -> {
                assertEquals(1, io.submit());
                long deadline = System.nanoTime() + 30_000_000_000L;
                while (io.poll(rec, 4) == 0) {
                    assertTrue(System.nanoTime() < deadline);
                    io.awaitCompletions(100);
                }
                return rec.count();
            }));
            assertEquals(BLOCK, rec.result(7));
        }
    }

    /**
     * DEFER_TASKRUN: a finished read is not in the CQ until the owner enters with GETEVENTS (the
     * SQ says completions wait), and the completion eventfd is still signalled for it, so a
     * thread that sleeps in epoll on that eventfd is woken and its poll posts and reaps it.
     */
    @Test
    void completionsWaitForTheOwnersEnterAndStillSignalTheEventFd() throws Exception {
        try (Image image = image(16);
             IoUringBackend io = singleIssuer(image, 4);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            onOwner(() -> {
                IoVector v = new IoVector(1);
                v.add(guest.address(0), BLOCK);
                assertEquals(0, io.prepareRead(5L * BLOCK, v, 5));
                assertEquals(1, io.submit());
                assertEquals(1, io.awaitCompletions(30_000), "the completion eventfd fired");
                // The read finished (the eventfd said so); the kernel posts it only when we enter.
                assertFalse(io.completionsPosted(), "posted without an enter: not deferred");
                assertTrue(io.completionsAwaitEntry());
                io.acknowledgeCompletions();
                Recorder rec = new Recorder(16);
                assertEquals(1, io.poll(rec, 4));
                assertEquals(BLOCK, rec.result(5));
                return null;
            });
            assertArrayEquals(Arrays.copyOfRange(content, 5 * BLOCK, 6 * BLOCK), guest.copy(0, BLOCK));
        }
    }

    /**
     * The engine registers guest memory from its control thread; a single-issuer ring refuses
     * that thread's io_uring_register (EEXIST). The table is pinned into a staging ring instead
     * and the owner clones it in at its next poll: then its one-segment transfers go as
     * READ_FIXED and read the right bytes. Unregistering from the control thread likewise.
     */
    @Test
    void aTableRegisteredByAnotherThreadReachesTheRingAtTheOwnersNextPoll() throws Exception {
        try (Image image = image(16);
             IoUringBackend io = singleIssuer(image, 1);
             IoUringFixedBuffersTest.Shared memory = new IoUringFixedBuffersTest.Shared(64 * 1024)) {
            assertEquals((long) BLOCK, (long) onOwner(() -> readAndReap(io, memory.address(0), 1)));
            assertEquals(IoUringDescriptor.OP_READ, io.sqeOpcode(0), "nothing registered yet: a plain READ");
            int rc = io.registerBuffers(new long[] {memory.address(0)}, new long[] {64 * 1024});
            Assumptions.assumeTrue(rc != -Errno.EFAULT && rc != -Errno.ENOMEM, "the kernel refused pinning: " + io.bufferRegistration());
            assertEquals(1, rc, io.bufferRegistration());
            assertTrue(io.bufferRegistration().contains("staged"), io.bufferRegistration());
            assertEquals((long) BLOCK, (long) onOwner(() -> readAndReap(io, memory.address(BLOCK), 2)));
            Assumptions.assumeTrue(kernelAtLeast(6, 12), "cloning a buffer table needs Linux 6.12: " + io.bufferRegistration());
            // The poll of that read adopted the table: the next read is a fixed one.
            assertEquals(1, io.fixedBufferCount(), io.bufferRegistration());
            assertEquals((long) BLOCK, (long) onOwner(() -> readAndReap(io, memory.address(2 * BLOCK), 4)));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, io.sqeOpcode(0));
            byte[] got = new byte[BLOCK];
            memory.bytes.getBytes(2 * BLOCK, got);
            assertArrayEquals(Arrays.copyOfRange(content, 4 * BLOCK, 5 * BLOCK), got);

            io.unregisterBuffers();
            assertEquals(0, io.fixedBufferCount(), "lookups miss at once");
            assertEquals((long) BLOCK, (long) onOwner(() -> readAndReap(io, memory.address(0), 6)));
            assertEquals(IoUringDescriptor.OP_READ, io.sqeOpcode(0));
            assertEquals(0, io.fixedBufferCount());
            assertFalse(io.bufferRegistration().contains("staged"), io.bufferRegistration());
        }
    }

    /** A table registered before the ring is entered goes straight in (no owner yet to refuse it). */
    @Test
    void aTableRegisteredBeforeTheFirstEnterIsTheRingsOwn() throws Exception {
        try (Image image = image(16);
             IoUringBackend io = singleIssuer(image, 1);
             IoUringFixedBuffersTest.Shared memory = new IoUringFixedBuffersTest.Shared(64 * 1024)) {
            int rc = io.registerBuffers(new long[] {memory.address(0)}, new long[] {64 * 1024});
            Assumptions.assumeTrue(rc > 0, "the kernel refused pinning: " + io.bufferRegistration());
            assertEquals(1, io.fixedBufferCount());
            assertEquals((long) BLOCK, (long) onOwner(() -> readAndReap(io, memory.address(0), 9)));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, io.sqeOpcode(0));
        }
    }

    /**
     * A drain on the owner delivers every deferred completion. Close on the owner with reads in
     * flight: its enter posts their deferred completions, and
     * everything is waited for. Close on another thread while reads the owner submitted are in
     * flight: only the owner can have them posted, so the close returns without them (their
     * slots stay allocated) instead of waiting for ever.
     */
    @Test
    void closeWaitsOnTheOwnerAndReturnsOnAnotherThread() throws Exception {
        try (Image image = image(64);
             GuestMemory guest = new GuestMemory(16 * BLOCK)) {
            IoUringBackend first = singleIssuer(image, 16);
            onOwner(() -> {
                // A drain (stop) on the owner: every deferred completion is posted and delivered.
                submitReads(first, guest, 16);
                Recorder drained = new Recorder(16);
                assertEquals(16, first.drain(drained));
                drained.assertAll(0, 16, BLOCK);
                submitReads(first, guest, 16);
                first.close();
                assertEquals(0, first.inFlight());
                return null;
            });
            IoUringBackend second = singleIssuer(image, 16);
            onOwner(() -> {
                submitReads(second, guest, 16);
                return null;
            });
            Thread.sleep(50); // the reads finish; their completions wait for the owner
            second.close();
            // What the kernel held is released only by the reaper, once the kernel let go of the
            // ring (see aRingClosedByAnotherThreadIsReleasedOnceTheKernelLetsGo).
            assertFalse(first.slotsKeptAfterClose(), "a drained ring frees its slots");
            assertTrue(first.closedDrained(), "drained");
            assertEquals(0, second.inFlight(), "closed");
            assertEquals(-Errno.EBADF, second.submit());
        }
    }

    /**
     * Session 13's closing note: a single-issuer ring closed by another thread than its owner
     * while operations were in flight (its wait refused: EEXIST) had its ring closed, but its
     * slots, buffers and completion eventfd were kept for the JVM's life and {@link
     * IoBackend#whenDrained} never ran (an engine device then never quiesced: its guest memory
     * stayed mapped and its fixed buffers counted pinned). Now the ring's exit is watched (a pipe
     * whose write end only the ring holds) and the reaper frees the rest once the kernel has let
     * go of the ring: every descriptor the back end opened is closed again. Real ring, real
     * O_DIRECT file; the wait is a hang guard.
     */
    @Test
    void aRingClosedByAnotherThreadIsReleasedOnceTheKernelLetsGo() throws Exception {
        try (Image image = image(64);
             GuestMemory guest = new GuestMemory(16 * BLOCK)) {
            long before = ringDescriptors();
            int undrainedBefore = IoBackends.undrainedBackends();
            IoUringBackend io = singleIssuer(image, 16);
            assertTrue(ringDescriptors() > before, "the ring's descriptors are seen");
            onOwner(() -> {
                submitReads(io, guest, 16);
                return null;
            });
            Thread.sleep(50); // the reads finish; their completions wait for the owner's enter
            io.close(); // on this thread: the owner alone could have them posted
            assertEquals(0, io.inFlight(), "closed");
            java.util.concurrent.CountDownLatch drained = new java.util.concurrent.CountDownLatch(1);
            io.whenDrained(drained::countDown);
            assertTrue(drained.await(30, TimeUnit.SECONDS), "never released after the kernel let go of the ring: "
                    + ringDescriptors() + " ring descriptors, " + before + " before");
            assertTrue(io.closedDrained());
            assertEquals(undrainedBefore, IoBackends.undrainedBackends(), "no longer counted undrained");
            assertEquals(before, ringDescriptors(), "the ring, its completion eventfd and its exit watch are all closed");
        }
    }

    /** Open descriptors of the kinds a ring opens: io_uring and eventfd (anonymous inodes) and pipes. */
    private static long ringDescriptors() throws IOException {
        try (java.util.stream.Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.filter(fd -> {
                try {
                    String to = Files.readSymbolicLink(fd).toString();
                    return to.startsWith("anon_inode:") || to.startsWith("pipe:");
                } catch (IOException e) {
                    return false; // closed meanwhile (the listing's own)
                }
            }).count();
        }
    }

    /**
     * Regression (review 9a): one enter without a wait posts at most 20 deferred completions on
     * Linux 6.13+, so a round took one seventh of a depth of 128. One poll now enters again while
     * completions wait and fewer than asked for are posted.
     */
    @Test
    void onePollTakesEveryFinishedOperation() throws Exception {
        int n = 64;
        try (Image image = image(n);
             IoUringBackend io = singleIssuer(image, n);
             GuestMemory guest = new GuestMemory(n * BLOCK)) {
            onOwner(() -> {
                submitReads(io, guest, n);
                // Every read finishes well within this; their completions wait for our enter.
                Thread.sleep(1000);
                Recorder rec = new Recorder(n);
                int first = io.poll(rec, n);
                assertEquals(n, first, "one poll delivered " + first + " of " + n + " finished reads");
                rec.assertAll(0, n, BLOCK);
                return null;
            });
        }
    }

    private static void submitReads(IoUringBackend io, GuestMemory guest, int n) {
        for (int i = 0; i < n; i++) {
            IoVector v = new IoVector(1);
            v.add(guest.address(i * BLOCK), BLOCK);
            assertEquals(0, io.prepareRead((long) i * BLOCK, v, i));
        }
        assertEquals(n, io.submit());
        assertEquals(n, io.inFlight());
    }

    /** A kernel that refuses the single-issuer flags (here: DEFER_TASKRUN alone, EINVAL) gets the usual ring. */
    @Test
    void refusedFlagsFallBackToTheUsualRing() {
        UnsafeBuffer params = new NativeBuffer(IoUringDescriptor.PARAMS_LENGTH).buffer();
        int fd = IoUringBackend.setup(8, params, IoUringDescriptor.SETUP_DEFER_TASKRUN);
        try {
            int flags = params.getInt(IoUringDescriptor.PARAMS_FLAGS_OFFSET);
            assertEquals(0, flags & (IoUringDescriptor.SETUP_SINGLE_ISSUER | IoUringDescriptor.SETUP_DEFER_TASKRUN));
            if (kernelAtLeast(5, 19)) {
                assertEquals(IoUringDescriptor.SETUP_SUBMIT_ALL | IoUringDescriptor.SETUP_COOP_TASKRUN
                        | IoUringDescriptor.SETUP_TASKRUN_FLAG, flags);
            }
        } finally {
            Native.libc().close(fd);
        }
        long rc = Native.syscall(Linux.SYS_IO_URING_SETUP, 8, params.addressOffset(), 0, 0, 0);
        assertTrue(rc >= 0);
        Native.libc().close((int) rc);
    }

    /**
     * Every depth up to the kernel's 32768 entries works: below 32761 the ring has its spare
     * SQEs for a ring sleep's polls; above, it has none and declines the ring sleep (the thread
     * keeps epoll); past 32768 the back end refuses, saying why.
     */
    @Test
    void everyDepthUpToTheKernelsLimitWorks() throws Exception {
        try (Image image = image(16);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            for (int depth : new int[] {16385, IoUringDescriptor.MAX_ENTRIES - RingPolls.SPARE_SQES,
                    IoUringDescriptor.MAX_ENTRIES - RingPolls.SPARE_SQES + 1, IoUringDescriptor.MAX_ENTRIES}) {
                try (IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth).maxSegments(1))) {
                    boolean spares = depth <= IoUringDescriptor.MAX_ENTRIES - RingPolls.SPARE_SQES;
                    assertEquals(spares ? RingPolls.SPARE_SQES : 0, io.spareSqes(), "depth " + depth);
                    if (!spares) {
                        assertNull(io.sleepInRing(), "no spare SQEs: no ring sleep at depth " + depth);
                    }
                    assertEquals((long) BLOCK, readAndReap(io, guest.address(0), 2), "depth " + depth);
                }
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new IoUringBackend(image, BackendOptions.depth(IoUringDescriptor.MAX_ENTRIES + 1).maxSegments(1)));
            assertTrue(e.getMessage().contains("32768"), e.getMessage());
        }
    }

    /** Linux AIO at the same depths: io_setup takes up to the system's aio-max-nr (65536 by default). */
    @Test
    void linuxAioTakesTheLargestDepths() throws Exception {
        try (Image image = image(16);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            for (int depth : new int[] {16385, 32768}) {
                try (LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(depth).maxSegments(1))) {
                    IoVector v = new IoVector(1);
                    v.add(guest.address(0), BLOCK);
                    assertEquals(0, io.prepareRead(0, v, 0));
                    assertEquals(1, io.submit());
                    Recorder rec = new Recorder(1);
                    long deadline = System.nanoTime() + 30_000_000_000L;
                    while (io.poll(rec, 4) == 0) {
                        assertTrue(System.nanoTime() < deadline);
                        io.awaitCompletions(100);
                    }
                    assertEquals(BLOCK, rec.result(0), "depth " + depth);
                }
            }
        }
    }
}
