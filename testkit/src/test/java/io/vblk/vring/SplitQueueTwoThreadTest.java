package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.BitSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

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
 * interrupts are eventfd writes sent only when the other side asked. A lost wake-up leaves both
 * sides asleep: the 10 s wait times out and the test fails. Every request carries a sequence
 * number the device echoes back; each must complete exactly once (a BitSet, plus the driver's
 * check that every used id is an outstanding head), in whatever order the device completes them
 * (it reverses every batch).
 */
class SplitQueueTwoThreadTest {
    private static final int REQUESTS = 10_000_000;
    private static final int SIZE = 256;
    private static final int SLOT_BYTES = 64;
    private static final int SPIN_POLLS = 64;
    private static final int YIELD_POLLS = 8;
    private static final int WAKE_UP_TIMEOUT_MS = 10_000;

    /** Counts of one side's notifications, for the report and the "really slept" check. */
    static final class Counters {
        long notificationsSent;
        long sleeps;
        /** Times this side went to sleep (counted before it waits, so the other side can see it). */
        volatile long sleepsStarted;
    }

    @ParameterizedTest(name = "EVENT_IDX {0}")
    @ValueSource(booleans = {true, false})
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    @DisplayName("10M requests, driver and device on two threads, every one completed exactly once, no lost wake-up")
    void tenMillionRequests(boolean eventIdx) throws Exception {
        try (GuestMemory mem = GuestMemory.builder().guarded(true).addMemfd(0, 1 << 20).build();
                EventFd kick = EventFd.create(false);
                EventFd call = EventFd.create(false)) {
            SplitQueueDriver driver = SplitQueueDriver.builder(mem).size(SIZE).eventIdx(eventIdx).indirectEntries(4)
                    .area(0, 1 << 20).build();
            SplitQueue queue = new SplitQueue(0, 4);
            assertEquals(0, queue.activate(mem, SIZE, driver.descGpa(), driver.availGpa(), driver.usedGpa(), eventIdx, true));

            AtomicReference<Throwable> failure = new AtomicReference<>();
            Counters device = new Counters();
            Counters driverSide = new Counters();
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
            System.out.printf("EVENT_IDX %s: %d requests in %d ms (%.0f k/s); kicks %d, interrupts %d, "
                    + "driver slept %d times, device slept %d times%n", eventIdx, REQUESTS, elapsedMs,
                    REQUESTS / (double) Math.max(1, elapsedMs), driverSide.notificationsSent, device.notificationsSent,
                    driverSide.sleeps, device.sleeps);
            assertNull(failure.get());
            assertEquals(REQUESTS, done.cardinality());
            assertEquals(0, driver.outstanding());
            // The sleep path is what this test is for, but whether a side ever reaches it is the
            // scheduler's: on this 2-core VM (Linux 6.18) a CI run went 10 million requests with
            // one side never asleep (each 2 s pause timed out). Such a run exercised the rest
            // (exactly-once completion, suppression) but not the wake-ups: reported as skipped, not passed.
            org.junit.jupiter.api.Assumptions.assumeTrue(driverSide.sleeps > 0 && device.sleeps > 0,
                    "a side never slept in this run (driver " + driverSide.sleeps + ", device " + device.sleeps
                    + "): the lost-wake-up path was not exercised");
            assertTrue(driverSide.notificationsSent < REQUESTS / 10 && device.notificationsSent < REQUESTS / 10,
                    "notifications must be suppressed while the other side is busy");
        }
    }

    private volatile boolean stop;

    /**
     * Each side pauses this often (in requests), so the other one runs dry and has to take the
     * sleep path however the scheduler interleaves them: the lost-wake-up check must be exercised.
     */
    private static final long PAUSE_EVERY = 250_000;

    /**
     * Holds this side back until the other side has gone to sleep (bounded, 2 s): a fixed pause
     * is not enough on a loaded machine, where the other thread may not run at all meanwhile.
     */
    private static void pause(Counters other) {
        long before = other.sleepsStarted;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
        while (other.sleepsStarted == before && System.nanoTime() < deadline) {
            try {
                Thread.sleep(1);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    private void runDevice(SplitQueue queue, EventFd kick, EventFd call, Counters c, Counters driverSide) {
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
                if (popped / PAUSE_EVERY != (popped - n) / PAUSE_EVERY) {
                    pause(driverSide); // hold completions back so the driver runs dry and must sleep
                }
                for (int i = n - 1; i >= 0; i--) { // complete out of order
                    queue.addUsed(batch[i], 9);
                }
                if (queue.publishUsed()) {
                    call.signal();
                    c.notificationsSent++;
                }
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
            if (queue.enableNotifications()) { // arrived meanwhile: no kick will come for it
                queue.disableNotifications();
                continue;
            }
            c.sleepsStarted++;
            int woken = kick.await(WAKE_UP_TIMEOUT_MS);
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

    private BitSet runDriver(SplitQueueDriver driver, EventFd kick, EventFd call, Counters c, Counters device,
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
        long lastPause = 0;
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
            if (progress && driver.publishAvail()) {
                kick.signal();
                c.notificationsSent++;
            }
            if (progress && sequence / PAUSE_EVERY != lastPause) {
                lastPause = sequence / PAUSE_EVERY;
                pause(device); // stop feeding the device so it runs dry and must sleep
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
            if (driver.enableInterrupts()) {
                driver.disableInterrupts();
                continue;
            }
            c.sleepsStarted++;
            int woken = call.await(WAKE_UP_TIMEOUT_MS);
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
