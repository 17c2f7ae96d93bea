package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.BitSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BooleanSupplier;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A driver thread and a device thread move 10 million requests through a 256-entry queue in
 * guarded guest memory. Each side polls briefly, then goes idle the only safe way (enable
 * notifications, re-check, and sleep in poll(2) on an eventfd only if nothing arrived); kicks and
 * interrupts are eventfd writes sent only when the other side asked. A publish the other side
 * slept through, armed, from before to after, must notify: a lost wake-up fails the test there
 * and then (and a side left asleep fails after 30 s). Every request carries a
 * sequence number the device echoes back; each must complete exactly once (a BitSet, plus the
 * driver's check that every used id is an outstanding head), in whatever order the device
 * completes them (it reverses every batch).
 *
 * <p>Whether a side ever runs dry while the other is busy is the scheduler's, so the wake-up paths
 * are exercised on purpose: every {@value #PAUSE_EVERY} requests one side (the device at even
 * multiples, holding the batch it popped; the driver at odd ones, after publishing) holds back
 * until the other has gone to sleep armed, by a handshake ({@link #pause}). Its next publish must
 * then notify: if {@code publishUsed()} or {@code publishAvail()} says no, that is a lost wake-up
 * and the test fails at once. Only one side pauses at a boundary: two sides pausing together each
 * wait for the other to sleep, which neither can while it pauses.
 */
class SplitQueueTwoThreadTest {
    private static final int REQUESTS = 10_000_000;
    private static final int SIZE = 256;
    private static final int SLOT_BYTES = 64;
    private static final int SPIN_POLLS = 64;
    private static final int YIELD_POLLS = 8;
    /** How long a side sleeps, or a pause waits for the other side to sleep, before failing. */
    private static final int WAKE_UP_TIMEOUT_MS = 30_000;
    /** A pause every this many requests (popped by the device, posted by the driver). */
    private static final long PAUSE_EVERY = 100_000;
    /** Pauses of each side per run: the boundaries alternate between them. */
    private static final long PAUSES_EACH = REQUESTS / PAUSE_EVERY / 2;

    /** One side's counts, and what the other side's pauses read of it. */
    static final class Side {
        final String name;
        long notificationsSent;
        /** Sleeps ended by a signal (a notification, or a pause's poke). */
        long sleeps;
        /** Times this side held back until the other one was asleep. */
        long pauses;
        /** Pauses whose next publish notified the sleeping side (each must). */
        long wakeUps;
        /** Publishes the other side slept through, armed, from before to after (each must notify). */
        long sleepersNotified;
        /** Times a pause found the other side asleep from before and woke it to re-arm. */
        long pokes;
        /** Set by a pause: the next publish must notify. */
        boolean mustNotify;
        /** This side's pause count, bumped after each of its signals during a pause too. */
        volatile long pauseEpoch;
        /** While asleep: the other side's {@link #pauseEpoch} read before this sleep drained its eventfd; -1 awake. */
        volatile long asleepAt = -1;
        /** Twice the sleeps begun, plus 1 while asleep (armed): the same odd value before and after a publish means slept through it. */
        volatile long sleepState;

        Side(String name) {
            this.name = name;
        }
    }

    @ParameterizedTest(name = "EVENT_IDX {0}")
    @ValueSource(booleans = {true, false})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    @DisplayName("10M requests, driver and device on two threads, every one completed exactly once, no lost wake-up")
    void tenMillionRequests(boolean eventIdx) throws Exception {
        try (GuestMemory mem = GuestMemory.builder().guarded(true).addMemfd(0, 1 << 20).build();
                EventFd kick = EventFd.create(true);
                EventFd call = EventFd.create(true)) {
            SplitQueueDriver driver = SplitQueueDriver.builder(mem).size(SIZE).eventIdx(eventIdx).indirectEntries(4)
                    .area(0, 1 << 20).build();
            SplitQueue queue = new SplitQueue(0, 4);
            assertEquals(0, queue.activate(mem, SIZE, driver.descGpa(), driver.availGpa(), driver.usedGpa(), eventIdx, true));

            AtomicReference<Throwable> failure = new AtomicReference<>();
            Side device = new Side("device");
            Side driverSide = new Side("driver");
            Thread deviceThread = new Thread(() -> {
                try {
                    runDevice(queue, kick, call, device, driverSide);
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                    call.signal(); // do not leave the driver waiting for the timeout
                }
            }, "device");
            deviceThread.start();
            long start = System.nanoTime();
            BitSet done;
            try {
                done = runDriver(driver, kick, call, driverSide, device, failure);
            } finally {
                stop = true;
                kick.signal();
                deviceThread.join();
            }
            long elapsedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            System.out.printf("EVENT_IDX %s: %d requests in %d ms (%.0f k/s); kicks %d (%d to a sleeping device), "
                    + "interrupts %d (%d to a sleeping driver); driver slept %d times, device %d; "
                    + "pauses (pokes) driver %d (%d), device %d (%d)%n", eventIdx, REQUESTS, elapsedMs,
                    REQUESTS / (double) Math.max(1, elapsedMs), driverSide.notificationsSent, driverSide.sleepersNotified,
                    device.notificationsSent, device.sleepersNotified, driverSide.sleeps, device.sleeps,
                    driverSide.pauses, driverSide.pokes, device.pauses, device.pokes);
            assertNull(failure.get());
            assertEquals(REQUESTS, done.cardinality());
            assertEquals(0, driver.outstanding());
            assertEquals(PAUSES_EACH, device.pauses, "device pauses");
            assertEquals(PAUSES_EACH, driverSide.pauses, "driver pauses");
            // each pause ended with the sleeping side notified and woken (else it timed out above)
            assertEquals(device.pauses, device.wakeUps, "interrupts to a sleeping driver");
            assertEquals(driverSide.pauses, driverSide.wakeUps, "kicks to a sleeping device");
            assertTrue(driverSide.sleeps >= device.pauses && device.sleeps >= driverSide.pauses, "each side woke from its sleeps");
            assertTrue(device.sleepersNotified >= device.pauses && driverSide.sleepersNotified >= driverSide.pauses,
                    "each pause left the other side asleep through the next publish");
            assertTrue(driverSide.notificationsSent < REQUESTS / 10 && device.notificationsSent < REQUESTS / 10,
                    "notifications must be suppressed while the other side is busy");
        }
    }

    private volatile boolean stop;

    /**
     * Holds this side back until the other side is asleep, armed, with no signal pending but the
     * one this side sends next: then that publish must notify, and the sleeper can only wake by
     * it. The other side cannot make progress meanwhile (the device holds what it popped; the
     * driver posts nothing), so it reaches its sleep within its polls; a side already asleep
     * from before the pause may have one of our earlier signals pending, so it is woken (a
     * spurious wake-up, which both sides must tolerate) to drain and re-arm.
     *
     * <p>The epoch makes "nothing pending" exact: this side bumps {@link Side#pauseEpoch} after
     * every signal it sends in the pause, and a sleeper reads the epoch before draining its
     * eventfd, so a sleep at the current epoch drained after all of them.
     */
    private static void pause(Side self, Side other, EventFd otherWake, BooleanSupplier abandoned) {
        self.pauses++;
        long epoch = ++self.pauseEpoch;
        long poked = -1;
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WAKE_UP_TIMEOUT_MS);
        for (int polls = 0;; polls++) {
            long at = other.asleepAt;
            if (at == epoch) {
                self.mustNotify = true;
                return;
            }
            if (at >= 0 && at != poked) {
                otherWake.signal();
                self.pokes++;
                poked = at;
                epoch = ++self.pauseEpoch;
            }
            if (abandoned.getAsBoolean()) {
                return;
            }
            if (System.nanoTime() - deadline > 0) {
                throw new AssertionError(self.name + " held back " + WAKE_UP_TIMEOUT_MS + " ms, " + other.name
                        + " never went to sleep (asleep at " + at + ", epoch " + epoch + ")");
            }
            if (polls < 100) {
                Thread.yield();
            } else {
                LockSupport.parkNanos(50_000);
            }
        }
    }

    /**
     * Before arming a sleep: the other side's pause epoch (read first), then drops any signal left
     * in {@code wake} (non-blocking read): what it was sent for is visible to the re-check that follows.
     */
    private static long prepareSleep(Side other, EventFd wake) {
        long epoch = other.pauseEpoch;
        wake.read();
        return epoch;
    }

    /**
     * Sleeps armed (the caller has enabled notifications and re-checked), published to the other
     * side (set after arming, cleared before disarming); returns what {@link EventFd#await} did.
     */
    private static int sleep(Side self, long epoch, EventFd wake) {
        self.sleepState++;
        self.asleepAt = epoch;
        int woken = wake.await(WAKE_UP_TIMEOUT_MS);
        self.asleepAt = -1;
        self.sleepState++;
        return woken;
    }

    /**
     * Whether {@code other} was asleep, armed, from before a publish ({@code before}, its
     * {@link Side#sleepState} then) until now. Read before signalling: the signal ends the sleep.
     */
    private static boolean sleptThrough(Side other, long before) {
        return (before & 1) == 1 && other.sleepState == before;
    }

    /**
     * Checks a publish: if the other side slept through it, armed, it must have notified, pause
     * or not; and the first publish after a pause must notify the side the pause left asleep.
     */
    private static void published(Side self, Side other, boolean sleptThrough, boolean notify) {
        if (notify) {
            self.notificationsSent++;
        }
        if (sleptThrough) {
            if (!notify) {
                throw new AssertionError(self.name + ": " + other.name + " slept armed through a publish that said "
                        + "no notification: a lost wake-up");
            }
            self.sleepersNotified++;
        }
        if (self.mustNotify) {
            if (!notify) {
                throw new AssertionError(self.name + ": the other side is asleep and armed, yet publishing said "
                        + "no notification: a lost wake-up");
            }
            self.mustNotify = false;
            self.wakeUps++;
        }
    }

    private void runDevice(SplitQueue queue, EventFd kick, EventFd call, Side c, Side driverSide) {
        DescriptorChain chain = queue.newChain();
        long popped = 0;
        int[] batch = new int[SIZE];
        int idle = 0;
        queue.disableNotifications();
        while (!stop) {
            int n = 0;
            int rc;
            while ((rc = queue.pop(chain)) == 1) {
                if (chain.segmentCount() != 3 || chain.length(0) != 16 || !chain.writable(2)) {
                    throw new AssertionError("unexpected chain " + chain);
                }
                long sequence = UnsafeApi.getLong(chain.address(0) + 8);
                UnsafeApi.putLong(chain.address(1), sequence); // echo it into the device-writable buffer
                UnsafeApi.putByte(chain.address(2), (byte) 0); // status OK
                batch[n++] = chain.head();
            }
            if (rc < 0) {
                throw new AssertionError("ring corrupt: " + queue.error());
            }
            if (n > 0) {
                popped += n;
                long boundary = popped / PAUSE_EVERY;
                if (boundary != (popped - n) / PAUSE_EVERY && boundary % 2 == 0) {
                    // hold completions back so the driver runs dry and must sleep
                    pause(c, driverSide, call, () -> stop);
                }
                for (int i = n - 1; i >= 0; i--) { // complete out of order
                    queue.addUsed(batch[i], 9);
                }
                long driverBefore = driverSide.sleepState;
                boolean notify = queue.publishUsed();
                boolean sleptThrough = sleptThrough(driverSide, driverBefore);
                if (notify) {
                    call.signal();
                }
                published(c, driverSide, sleptThrough, notify);
                idle = 0;
                continue;
            }
            if (++idle < SPIN_POLLS) {
                Thread.onSpinWait();
                continue;
            }
            if (idle < SPIN_POLLS + YIELD_POLLS) {
                Thread.yield();
                continue;
            }
            idle = 0;
            long epoch = prepareSleep(driverSide, kick);
            if (queue.enableNotifications()) { // arrived meanwhile: no kick will come for it
                queue.disableNotifications();
                continue;
            }
            int woken = sleep(c, epoch, kick);
            if (stop) {
                return;
            }
            if (woken != 1) {
                throw new AssertionError("device: lost kick (waited " + WAKE_UP_TIMEOUT_MS + " ms, rc " + woken + ")");
            }
            kick.read();
            c.sleeps++;
            queue.disableNotifications();
        }
    }

    private BitSet runDriver(SplitQueueDriver driver, EventFd kick, EventFd call, Side c, Side device,
            AtomicReference<Throwable> failure) {
        int[] freeSlots = new int[SIZE];
        long[] hdr = new long[SIZE];
        long[][] gpas = new long[SIZE][];
        int[] slotOfHead = new int[SIZE];
        int[] lens = {16, 8, 1};
        boolean[] writable = {false, true, true};
        for (int s = 0; s < SIZE; s++) {
            long gpa = driver.allocate(SLOT_BYTES, SLOT_BYTES);
            gpas[s] = new long[] {gpa, gpa + 16, gpa + 24};
            hdr[s] = driver.hostAddress(gpa, SLOT_BYTES);
            freeSlots[s] = s;
        }
        int free = SIZE;
        long lastBoundary = 0;
        BitSet done = new BitSet(REQUESTS);
        long sequence = 0;
        long completed = 0;
        int idle = 0;
        driver.disableInterrupts();
        while (completed < REQUESTS) {
            if (failure.get() != null) {
                throw new AssertionError("device failed", failure.get());
            }
            boolean progress = false;
            while (sequence < REQUESTS && free > 0) {
                int slot = freeSlots[free - 1];
                UnsafeApi.putLong(hdr[slot] + 8, sequence);
                UnsafeApi.putLong(hdr[slot] + 16, -1L);
                UnsafeApi.putByte(hdr[slot] + 24, (byte) 0xff);
                int head = (sequence & 3) == 3 ? driver.addIndirect(gpas[slot], lens, writable, 3)
                        : driver.addDirect(gpas[slot], lens, writable, 3);
                if (head < 0) {
                    break; // descriptors exhausted (direct chains take 3)
                }
                free--;
                slotOfHead[head] = slot;
                sequence++;
                progress = true;
            }
            if (progress) {
                long deviceBefore = device.sleepState;
                boolean notify = driver.publishAvail();
                boolean sleptThrough = sleptThrough(device, deviceBefore);
                if (notify) {
                    kick.signal();
                }
                published(c, device, sleptThrough, notify);
                long boundary = sequence / PAUSE_EVERY;
                if (boundary != lastBoundary) {
                    lastBoundary = boundary;
                    if (boundary % 2 == 1) {
                        // stop feeding the device so it runs dry and must sleep
                        pause(c, device, kick, () -> failure.get() != null);
                    }
                }
            }
            int id;
            while ((id = driver.reap()) >= 0) {
                int slot = slotOfHead[id];
                long seq = UnsafeApi.getLong(hdr[slot] + 8);
                if (UnsafeApi.getLong(hdr[slot] + 16) != seq || UnsafeApi.getByte(hdr[slot] + 24) != 0
                        || driver.lastUsedLength() != 9) {
                    throw new AssertionError("request " + seq + " completed wrongly");
                }
                if (done.get((int) seq)) {
                    throw new AssertionError("request " + seq + " completed twice");
                }
                done.set((int) seq);
                freeSlots[free++] = slot;
                completed++;
                progress = true;
            }
            if (id != SplitQueueDriver.NONE) {
                throw new AssertionError("device returned a bad used element: " + id);
            }
            if (progress) {
                idle = 0;
                continue;
            }
            if (++idle < SPIN_POLLS) {
                Thread.onSpinWait();
                continue;
            }
            if (idle < SPIN_POLLS + YIELD_POLLS) {
                Thread.yield();
                continue;
            }
            idle = 0;
            long epoch = prepareSleep(device, call);
            if (driver.enableInterrupts()) {
                driver.disableInterrupts();
                continue;
            }
            int woken = sleep(c, epoch, call);
            if (woken != 1) {
                throw new AssertionError("driver: lost interrupt (waited " + WAKE_UP_TIMEOUT_MS + " ms with "
                        + (sequence - completed) + " in flight, rc " + woken + ")");
            }
            call.read();
            c.sleeps++;
            driver.disableInterrupts();
        }
        return done;
    }
}
