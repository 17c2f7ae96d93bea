package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.EventFd;

/**
 * {@link RingSleep} on a real io_uring and real eventfds: a sleep in the ring ends for a watched
 * eventfd's signal, for a completion and for its timeout; poll CQEs mixed among I/O CQEs are
 * never delivered as completions and lose none; draining and closing still work once the
 * kernel no longer signals the completion eventfd. A sleep that never ends fails the test at the
 * class's timeout instead of hanging the build (it times nothing).
 */
// One thread runs each whole test: polls belong to the thread that armed them (the kernel cancels
// them when it exits), as on an I/O thread; the timeout fails a hang instead of blocking the build.
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class RingSleepTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    private byte[] content;

    private Image filledImage(int blocks) throws IOException {
        Path path = dir.resolve("img");
        content = new byte[blocks * BLOCK];
        new Random(5).nextBytes(content);
        Files.write(path, content);
        return Image.open(path, ImageOptions.defaults().direct(true));
    }

    @Test
    void aSignalOnAWatchedEventFdEndsTheSleepAndIsReportedNotDelivered() throws IOException {
        try (Image image = filledImage(16);
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(8));
             EventFd kick = EventFd.create(true)) {
            RingSleep ring = io.sleepInRing();
            assertNotNull(ring, "Linux 6.x has multishot poll and EXT_ARG");
            AtomicInteger woken = new AtomicInteger();
            ring.onWake(tag -> woken.addAndGet(tag == 7 ? 1 : 1000));
            ring.watch(kick.fd(), 7);
            Recorder rec = new Recorder(8);
            AtomicInteger sleeps = new AtomicInteger();
            for (int round = 0; round < 20; round++) {
                Thread signaller = new Thread(() -> {
                    sleepMs(5);
                    kick.signal();
                });
                signaller.start();
                // A sleep may return early (the contract allows it: the caller re-checks); it
                // must end once the signal came, and the signal is reported exactly once.
                int expected = round + 1;
                while (woken.get() < expected) {
                    ring.sleep(-1);
                    io.poll(rec, 8);
                    sleeps.incrementAndGet();
                }
                joinQuietly(signaller);
                io.poll(rec, 8);
                assertEquals(round + 1, woken.get(), "each signal reported once under its tag");
                assertEquals(0, rec.count(), "a poll CQE is never a completion");
                assertEquals(0, io.inFlight());
            }
            // A spurious return is allowed, a spinning sleep is not: 20 signals 5 ms apart.
            assertTrue(sleeps.get() <= 60, "the sleeps waited: " + sleeps.get() + " for 20 signals");
        }
    }

    @Test
    void aSignalBeforeTheFirstSleepArmsIsNotLost() throws IOException {
        try (Image image = filledImage(16);
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(8));
             EventFd kick = EventFd.create(true)) {
            RingSleep ring = io.sleepInRing();
            AtomicInteger woken = new AtomicInteger();
            ring.onWake(tag -> woken.incrementAndGet());
            ring.watch(kick.fd(), 3);
            // Signalled after watch() but before the sleep arms the poll: the arm finds the
            // eventfd readable and fires at once.
            kick.signal();
            ring.sleep(-1);
            io.poll(new Recorder(1), 1);
            assertEquals(1, woken.get());
        }
    }

    @Test
    void aCompletionEndsTheSleep() throws IOException {
        try (Image image = filledImage(16);
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(8));
             GuestMemory guest = new GuestMemory(BLOCK)) {
            RingSleep ring = io.sleepInRing();
            IoVector v = new IoVector(1);
            v.add(guest.address(0), BLOCK);
            for (int block = 0; block < 16; block++) {
                assertEquals(0, io.prepareRead((long) block * BLOCK, v, 0));
                assertEquals(1, io.submit());
                Recorder rec = new Recorder(1);
                while (rec.count() == 0) {
                    ring.sleep(-1);
                    io.poll(rec, 4);
                }
                assertEquals(BLOCK, rec.result(0));
                assertArrayEquals(java.util.Arrays.copyOfRange(content, block * BLOCK, (block + 1) * BLOCK), guest.copy(0, BLOCK));
            }
        }
    }

    @Test
    void aTimeoutEndsTheSleepAfterItsTime() throws IOException {
        try (Image image = filledImage(4);
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(4))) {
            RingSleep ring = io.sleepInRing();
            long start = System.nanoTime();
            ring.sleep(30_000_000L);
            // A kernel timeout never fires early: it slept, it did not return at once.
            assertTrue(System.nanoTime() - start >= 25_000_000L, "slept for its timeout");
        }
    }

    @Test
    void anUnwatchedEventFdNoLongerWakes() throws IOException {
        try (Image image = filledImage(4);
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(4));
             EventFd kick = EventFd.create(true)) {
            RingSleep ring = io.sleepInRing();
            AtomicInteger woken = new AtomicInteger();
            ring.onWake(tag -> woken.incrementAndGet());
            ring.watch(kick.fd(), 1);
            ring.sleep(0); // arms the poll
            ring.unwatch(1);
            ring.sleep(0); // submits the removal
            io.poll(new Recorder(1), 1);
            int before = woken.get();
            kick.signal();
            ring.sleep(20_000_000L);
            io.poll(new Recorder(1), 1);
            assertEquals(before, woken.get(), "no wake-up after unwatch");
            assertEquals(0, io.inFlight(), "poll SQEs and CQEs are not I/O");
        }
    }

    /**
     * Reads at full depth while another thread signals a watched eventfd as fast as it can: every
     * read completes exactly once with its data, no poll CQE reaches the sink, in-flight
     * accounting returns to zero, and the ring's polls kept firing throughout.
     */
    @Test
    void pollCqesInterleavedWithIoCqesLoseNothing() throws Exception {
        int depth = 32;
        int blocks = 64;
        try (Image image = filledImage(blocks);
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth));
             GuestMemory guest = new GuestMemory(depth * BLOCK);
             EventFd kick = EventFd.create(true)) {
            RingSleep ring = io.sleepInRing();
            AtomicInteger woken = new AtomicInteger();
            ring.onWake(tag -> woken.incrementAndGet());
            ring.watch(kick.fd(), 9);
            AtomicBoolean stop = new AtomicBoolean();
            Thread signaller = new Thread(() -> {
                while (!stop.get()) {
                    kick.signal();
                    Thread.onSpinWait();
                }
            });
            signaller.start();
            long[] seen = new long[depth];
            int total = 3000;
            int issued = 0;
            int done = 0;
            Random random = new Random(1);
            int[] blockOf = new int[depth];
            java.util.ArrayDeque<Integer> free = new java.util.ArrayDeque<>();
            for (int i = 0; i < depth; i++) {
                free.add(i);
            }
            IoVector v = new IoVector(1);
            CompletionSink sink = (userData, result) -> {
                int slot = (int) userData;
                assertTrue(slot >= 0 && slot < depth, "a request's own user data: " + userData);
                assertEquals(BLOCK, result);
                int b = blockOf[slot];
                assertArrayEquals(java.util.Arrays.copyOfRange(content, b * BLOCK, (b + 1) * BLOCK),
                        guest.copy(slot * BLOCK, BLOCK));
                seen[slot]++;
                free.add(slot);
            };
            try {
                long deadline = System.nanoTime() + 60_000_000_000L;
                while (done < total) {
                    assertTrue(System.nanoTime() < deadline, "stalled at " + done);
                    while (issued < total && !free.isEmpty()) {
                        int slot = free.poll();
                        blockOf[slot] = random.nextInt(blocks);
                        v.clear();
                        v.add(guest.address(slot * BLOCK), BLOCK);
                        assertEquals(0, io.prepareRead((long) blockOf[slot] * BLOCK, v, slot));
                        issued++;
                    }
                    if (io.pendingSubmit() > 0) {
                        io.submit();
                    }
                    int n = io.poll(sink, depth);
                    done += n;
                    if (n == 0) {
                        ring.sleep(100_000_000L);
                    }
                }
            } finally {
                stop.set(true);
                joinQuietly(signaller);
            }
            long sum = 0;
            for (long s : seen) {
                sum += s;
            }
            assertEquals(total, sum, "every read completed exactly once");
            assertEquals(0, io.inFlight(), "nothing counted in flight");
            assertTrue(woken.get() > 0, "the polls fired among the completions");
        }
    }

    /**
     * Once the ring sleeps, the kernel no longer signals the completion eventfd: a drain (which
     * waits with awaitCompletions) and a close with reads in flight still finish.
     */
    @Test
    void drainAndCloseStillFinishWithReadsInFlight() throws IOException {
        int depth = 16;
        try (Image image = filledImage(depth);
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth));
            assertNotNull(io.sleepInRing());
            IoVector v = new IoVector(1);
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, io.prepareRead((long) i * BLOCK, v, i));
            }
            assertEquals(depth, io.submit());
            Recorder rec = new Recorder(depth);
            io.drain(rec);
            assertEquals(depth, rec.count());
            assertArrayEquals(content, guest.copy(0, depth * BLOCK));
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, io.prepareRead((long) i * BLOCK, v, i));
            }
            assertEquals(depth, io.submit());
            io.close();
            assertEquals(0, io.inFlight());
        }
    }

    @Test
    void otherBackEndsHaveNoRingToSleepIn() throws IOException {
        try (Image image = filledImage(4);
             IoBackend aio = IoBackends.open(BackendKind.LINUX_AIO, image, 4);
             IoBackend nul = IoBackends.open(BackendKind.NULL, null, 4)) {
            assertEquals(null, aio.sleepInRing());
            assertEquals(null, nul.sleepInRing());
        }
    }

    private static void sleepMs(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void joinQuietly(Thread t) {
        try {
            t.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
