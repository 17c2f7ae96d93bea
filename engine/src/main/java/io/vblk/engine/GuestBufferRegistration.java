package io.vblk.engine;

import java.util.concurrent.atomic.AtomicLong;

import io.vblk.aio.FixedBufferMode;
import io.vblk.block.BlockDriver;
import io.vblk.hostmem.GuestMemory;
import io.vblk.hostmem.GuestRegion;
import io.vblk.sys.Errno;

/**
 * Registers a device's guest memory with its I/O threads' drivers as fixed buffers (io_uring
 * READ_FIXED/WRITE_FIXED for one-segment transfers), under the tuning's {@link FixedBufferMode},
 * when the device gets its first table and on every {@link BlockDevice#setMemory} after the
 * queues drained, so the registration never outlives the mapping it pinned. Writable regions
 * only: the kernel pins for writing, which a read-only mapping refuses, and the device never
 * reads into one anyway.
 *
 * <p>It runs on the control thread that changes the table, not on the I/O thread: pinning
 * faults in every page (seconds for a fresh GiB), and an I/O thread shared with other devices
 * would stall their queues for that long (2.3 s of latency on a neighbour for 1.5 GiB, in a
 * review). That is safe because every queue of the device is stopped and drained meanwhile, so
 * its rings take no transfer; the queues' restart, a command through the I/O thread's inbox,
 * publishes the new table to that thread.
 *
 * <p>What one process pins is bounded too, not only each table: the tables registered at once
 * may total at most {@link FixedBufferMode#processLimitBytes()}; a table that would pass it goes
 * unregistered. A table counts once however many I/O threads register it (the same pages), and
 * until no ring can hold it pinned: a device closed with a ring left undrained (the kernel still
 * holding its operations) gives its share back only when aio's reaper has released that ring.
 */
final class GuestBufferRegistration {
    private static final System.Logger LOG = System.getLogger("io.vblk.engine");
    /** Bytes of guest memory registered by all devices of this process. */
    private static final AtomicLong PINNED = new AtomicLong();

    private final FixedBufferMode mode;
    private final long processLimitBytes;
    /**
     * What this device holds of {@link #PINNED}: set by the control thread, given back by it or,
     * after a close that left a ring with operations in the kernel, by the thread that released
     * the ring (aio's reaper).
     */
    private final AtomicLong reserved = new AtomicLong();

    /** Under {@code mode}, with the process bound {@code processLimitBytes} ({@link FixedBufferMode#processLimitBytes()}). */
    GuestBufferRegistration(FixedBufferMode mode, long processLimitBytes) {
        this.mode = mode;
        this.processLimitBytes = processLimitBytes;
    }

    /** Bytes of guest memory registered by all devices of this process (for tests and metrics). */
    static long pinnedBytes() {
        return PINNED.get();
    }

    /**
     * Replaces what every driver has registered with {@code memory}'s writable regions (or
     * nothing: null memory, a table the mode or the process budget refuses) and writes each
     * thread's outcome into {@code outcomes}. Control thread; every queue stopped and drained.
     */
    void apply(IoThread[] threads, GuestMemory memory, String[] outcomes) {
        release();
        String refusal = memory == null ? "none (no guest memory)" : decide(memory);
        boolean any = false;
        for (IoThread thread : threads) {
            String who = "I/O thread " + thread.id();
            String outcome = refusal != null ? refusal : register(thread, memory, who);
            if (refusal != null) {
                thread.backend().unregisterBuffers();
                if (thread.backend().singleIssuer()) {
                    ownerTakes(thread);
                }
            }
            any |= outcome.startsWith("registered ");
            outcomes[thread.id()] = who + ": " + outcome;
        }
        if (!any) {
            release(); // no back end took it (linux-aio, threads, a refusal): nothing is pinned
        }
    }

    /**
     * A single-issuer ring refuses this thread's registrations: the back end pinned the table into
     * a staging ring (or only dropped the old one), and the ring's owner, the I/O thread, clones
     * it in (or drops it) at its next poll. This makes that poll happen now and waits for it (a
     * round: the clone pins nothing, so a shared thread's neighbours do not wait for it), so that
     * when the queues restart, or the caller unmaps the old table, the ring holds the new one.
     * Bounded: a thread that is not running (never started, stuck) takes it at its next round.
     */
    private static void ownerTakes(IoThread thread) {
        Thread t = thread.thread();
        if (t == null || !t.isAlive() || t == Thread.currentThread()) {
            return;
        }
        java.util.concurrent.CountDownLatch polled = new java.util.concurrent.CountDownLatch(1);
        // A command runs before the round's poll: it runs again each round (and keeps the thread
        // awake) until a poll took the table.
        thread.submitCommand(io -> {
            if (io.backend().registrationPending()) {
                return false;
            }
            polled.countDown();
            return true;
        });
        try {
            polled.await(OWNER_WAIT_SECONDS, java.util.concurrent.TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static final long OWNER_WAIT_SECONDS = 5;

    /**
     * Gives this device's share of the budget back: its table is unregistered, or no back end
     * can hold its pages pinned any more (the device closed and quiesced). Any thread; once.
     */
    void release() {
        PINNED.addAndGet(-reserved.getAndSet(0));
    }

    /** Null when {@code memory} is to be registered (its bytes then reserved), else why not. */
    String decide(GuestMemory memory) {
        long total = 0;
        long writable = 0;
        for (int i = 0; i < memory.regionCount(); i++) {
            GuestRegion r = memory.region(i);
            // Saturating: a hostile table's sizes may sum past 2^63.
            total = saturatingAdd(total, r.size());
            if (!r.readOnly()) {
                writable = saturatingAdd(writable, r.size());
            }
        }
        String refusal = mode.refusal(total);
        if (refusal != null || writable == 0) {
            return "not registered: " + (refusal != null ? refusal : "no writable region");
        }
        long limit = processLimitBytes;
        for (long now = PINNED.get(); ; now = PINNED.get()) {
            if (writable > limit - now) {
                return "not registered: " + mode + ": " + writable + " bytes would take what this process pins past "
                        + limit + " (" + now + " pinned by other devices)";
            }
            if (PINNED.compareAndSet(now, now + writable)) {
                reserved.set(writable);
                return null;
            }
        }
    }

    private static long saturatingAdd(long a, long b) {
        return a > Long.MAX_VALUE - b ? Long.MAX_VALUE : a + b;
    }

    private String register(IoThread thread, GuestMemory memory, String who) {
        BlockDriver driver = thread.backend();
        int writable = 0;
        for (int i = 0; i < memory.regionCount(); i++) {
            if (!memory.region(i).readOnly()) {
                writable++;
            }
        }
        long[] addresses = new long[writable];
        long[] lengths = new long[writable];
        for (int i = 0, k = 0; i < memory.regionCount(); i++) {
            GuestRegion r = memory.region(i);
            if (!r.readOnly()) {
                addresses[k] = r.hostAddress();
                lengths[k++] = r.size();
            }
        }
        int rc = driver.registerBuffers(addresses, lengths);
        if (driver.singleIssuer()) {
            ownerTakes(thread); // a refusal still drops the old table there
        }
        if (rc >= 0) {
            return "registered " + driver.bufferRegistration();
        }
        String why = "not registered: " + driver.bufferRegistration();
        if (rc != -Errno.EOPNOTSUPP || mode == FixedBufferMode.ON) {
            // Once per table change, off the data path: transfers go unregistered, as before.
            LOG.log(System.Logger.Level.INFO, "{0}: fixed buffers {1}", who, why);
        }
        return why;
    }
}
