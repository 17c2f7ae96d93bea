package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_DISCARD;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.testkit.GatedBackend;

/**
 * rev14b M2: every pop waits for as many free back-end slots as a DISCARD or WRITE_ZEROES
 * request may take at once (one per range segment), reads included. A device whose
 * maxRangeSegments exceeded its back end's depth therefore never popped anything, and its thread
 * spun in the sleep re-check, which saw the chains and vetoed every sleep. Such a depth is now
 * refused at build time (an explicit one), or raised to the segments (the default one). And the
 * sleep re-check asks the pop's own condition: chains that wait for back-end slots (fewer free
 * than the reserve, requests to spare) no longer keep the thread from sleeping until a
 * completion arrives.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class RangeReserveDepthTest {
    @TempDir
    Path dir;

    @Test
    void anExplicitDepthBelowTheRangeSegmentsIsRefusedAtBuild() {
        Tuning t = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).backendDepth(4).build();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DeviceRig.builder(dir, BackendKind.NULL).tuning(t).config(b -> b.discard(true).maxRangeSegments(8)).build().close());
        assertTrue(e.getMessage().contains("maxRangeSegments"), e.getMessage());
    }

    /** A 4-entry queue gives a default depth of 4; with 8 range segments it is raised to 8, and reads and an 8-range DISCARD are served. */
    @Test
    void theDefaultDepthCoversTheRangeSegments() throws Exception {
        Tuning t = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build();
        try (DeviceRig a = DeviceRig.builder(dir, BackendKind.NULL).tuning(t)
                .config(b -> b.queueSize(4).discard(true).maxRangeSegments(8)).build()) {
            long buf = a.buffer(0, 4096);
            assertEquals(0, a.roundTrip(0, T_IN, 0, buf, 4096, true)); // timed out (never popped) before
            long segments = a.buffer(0, 8 * 16);
            long host = a.host(segments, 8 * 16);
            for (int i = 0; i < 8; i++) {
                UnsafeApi.putLong(host + 16L * i, 64L * i); // sector
                UnsafeApi.putInt(host + 16L * i + 8, 8); // sectors
                UnsafeApi.putInt(host + 16L * i + 12, 0); // flags
            }
            assertEquals(0, a.roundTrip(0, T_DISCARD, 0, segments, 8 * 16, false));
        }
    }

    /**
     * s16b: every pop used to wait for as many free slots as the worst range request needs, so
     * reads and writes could only fill the back end's depth minus that many plus one: a depth of
     * 16 with 8 range segments kept 9 reads in flight, never 16. Now the pool's every slot takes
     * one (16 in flight at a held back end), and the pool's limit plus one waits for a completion,
     * letting the thread sleep meanwhile.
     */
    @Test
    void readsFillEverySlotOfThePoolAndOneMoreWaits() {
        GatedBackend gate = new GatedBackend(IoBackends.open(BackendKind.NULL, null, 16), false);
        Tuning inline = Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
        try (RoundRig rig = new RoundRig(inline, null, false, 1, gate, c -> c.discard(true).maxRangeSegments(8), 0)) {
            assertEquals(16, rig.thread.dispatcherPool().size());
            rig.offerReads(17);
            assertEquals(16, rig.thread.doWork(), "reads in flight at a depth of 16 (8 range segments reserved 7 before)");
            assertEquals(-1, rig.thread.prepareSleep(), "the one left waits for a completion: sleep on it");
            rig.thread.finishSleep();
            gate.open();
            rig.thread.doWork(); // reaps the 16 and pops the last
            rig.thread.doWork();
            assertEquals(17, rig.reapAll(), "every read served");
            for (int slot = 0; slot < 17; slot++) {
                assertEquals(0, rig.status(slot), "status of read " + slot);
            }
        }
    }

    /**
     * A range request that finds fewer free slots than its segments waits, its chain back in the
     * ring (the back end never refuses a segment: no IOERR for a request that only came early),
     * nothing behind it pops (reads cannot keep the slots taken), and the thread sleeps until a
     * completion (it vetoed the sleep once: a busy loop for as long as the disk took).
     */
    @Test
    void aRangeRequestWaitsForItsSegmentsSlotsWithoutOverrunningThePool() {
        GatedBackend gate = new GatedBackend(IoBackends.open(BackendKind.NULL, null, 16), false);
        Tuning inline = Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
        try (RoundRig rig = new RoundRig(inline, null, false, 1, gate, c -> c.discard(true).maxRangeSegments(8), 0)) {
            rig.offerReads(12);
            assertEquals(12, rig.thread.doWork(), "reads in flight at a depth of 16 (9 before)");
            long st = addDiscard(rig.driver, 8);
            rig.addRead(4096); // behind it
            rig.driver.publishAvail();
            assertEquals(0, rig.thread.doWork(), "popped with 4 slots free for 8 segments");
            assertEquals(-1, rig.thread.prepareSleep(), "waits for a completion: sleep on it");
            rig.thread.finishSleep();
            gate.open();
            rig.thread.doWork(); // reaps the 12, pops the DISCARD (8 slots) and the read
            rig.thread.doWork();
            rig.thread.doWork();
            assertEquals(14, rig.reapAll(), "every request served");
            assertEquals(0, UnsafeApi.getByte(st), "the DISCARD's status (IOERR: a segment refused for want of a slot)");
            for (int slot = 0; slot < 12; slot++) {
                assertEquals(0, rig.status(slot), "status of read " + slot);
            }
            assertEquals(0, rig.status(13), "status of the read behind the DISCARD");
        }
    }

    /**
     * A range request waiting for slots on one queue is not starved by another queue's reads:
     * they do not pop while it waits, and it goes first once its slots are free.
     */
    @Test
    void anotherQueuesReadsWaitBehindAWaitingRangeRequest() {
        GatedBackend gate = new GatedBackend(IoBackends.open(BackendKind.NULL, null, 16), false);
        Tuning inline = Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
        try (RoundRig rig = new RoundRig(inline, null, false, 2, gate, c -> c.discard(true).maxRangeSegments(8), 0)) {
            RoundRig.Lane reads = rig.lanes[0];
            RoundRig.Lane ranges = rig.lanes[1];
            reads.offerReads(12);
            assertEquals(12, rig.thread.doWork(), "reads in flight at a depth of 16 (9 before)");
            long st = addDiscard(ranges.driver, 8);
            ranges.driver.publishAvail();
            assertEquals(0, rig.thread.doWork(), "popped with 4 slots free for 8 segments");
            for (int i = 0; i < 9; i++) {
                reads.add(T_IN, 8L * (100 + i));
            }
            reads.driver.publishAvail();
            assertEquals(0, rig.thread.doWork(), "reads took slots the waiting DISCARD needs");
            gate.open();
            // Queue 0 comes first in a round: had its 9 reads popped once the 12 were reaped,
            // only 7 slots were left and the DISCARD waited again (for ever under steady reads).
            rig.thread.doWork(); // reaps the 12; the DISCARD pops, the reads wait
            rig.thread.doWork(); // reaps the DISCARD (its status written); the reads pop
            assertEquals(0, UnsafeApi.getByte(st), "the DISCARD did not go first once its slots were free");
            for (int i = 0; i < 3; i++) {
                rig.thread.doWork();
            }
            int served = 0;
            while (reads.driver.reap() >= 0) {
                served++;
            }
            assertEquals(21, served, "reads served");
            for (int slot = 0; slot < 21; slot++) {
                assertEquals(0, reads.status(slot), "status of read " + slot);
            }
            assertTrue(rig.broken.isEmpty(), "quarantined: " + rig.broken);
        }
    }

    /**
     * Throttled (one 4 KiB read a millisecond, a 5 ms burst): a queue held behind another
     * queue's waiting range request pops nothing and waits for back-end slots, which a
     * completion brings, not for the throttle. Its throttle deadline from a round before the wait
     * stayed set, and once it passed the sleep re-check took it for work: the thread spun, awake
     * without popping, for as long as the disk held the slots. Now a queue held behind the wait
     * has no throttle deadline; the thread sleeps until the completion, and everything is served,
     * the DISCARD first.
     */
    @Test
    void aQueueHeldBehindAWaitingRangeRequestSleepsThoughItsThrottleDeadlinePassed() {
        GatedBackend gate = new GatedBackend(IoBackends.open(BackendKind.NULL, null, 8), false);
        Tuning inline = Tuning.builder().threadingMode(ThreadingMode.SHARED).submitBatch(6).build();
        Throttle throttle = new Throttle(0, 4096 * 1000, 5);
        try (RoundRig rig = new RoundRig(inline, throttle, false, 2, gate, c -> c.discard(true).maxRangeSegments(8), 0)) {
            RoundRig.Lane reads = rig.lanes[0];
            RoundRig.Lane ranges = rig.lanes[1];
            rig.clock.update(0);
            reads.offerReads(10);
            assertEquals(6, rig.thread.doWork(), "the round's batch, within the burst (queue 1 goes first next)");
            long st = addDiscard(ranges.driver, 8);
            ranges.driver.publishAvail();
            assertEquals(0, rig.thread.doWork(), "both queues throttled");
            assertTrue(rig.queue.throttledUntilNs != 0, "queue 0 has a throttle deadline");
            rig.clock.update(TimeUnit.MILLISECONDS.toNanos(2)); // past it: the DISCARD pops, 2 slots free for 8 segments
            assertEquals(0, rig.thread.doWork(), "the DISCARD waits for its slots, queue 0 behind it");
            assertEquals(-1, rig.thread.prepareSleep(), "nothing to do before a completion: sleep on it");
            rig.thread.finishSleep();
            gate.open();
            for (int round = 0; round < 20; round++) {
                rig.clock.update(TimeUnit.MILLISECONDS.toNanos(3 + round * 5L));
                rig.thread.doWork();
            }
            assertEquals(0, UnsafeApi.getByte(st), "the DISCARD's status");
            int served = 0;
            while (reads.driver.reap() >= 0) {
                served++;
            }
            assertEquals(10, served, "reads served");
            for (int slot = 0; slot < 10; slot++) {
                assertEquals(0, reads.status(slot), "status of read " + slot);
            }
            assertTrue(rig.broken.isEmpty(), "quarantined: " + rig.broken);
        }
    }

    /** Adds (unpublished) a DISCARD of {@code count} 8-sector segments; returns its status byte's host address. */
    private static long addDiscard(io.vblk.testkit.SplitQueueDriver driver, int count) {
        long header = driver.allocate(16, 16);
        long segments = driver.allocate(count * 16L, 16);
        long status = driver.allocate(1, 1);
        long h = driver.hostAddress(header, 16);
        UnsafeApi.putInt(h, T_DISCARD);
        UnsafeApi.putInt(h + 4, 0);
        UnsafeApi.putLong(h + 8, 0);
        long sh = driver.hostAddress(segments, count * 16L);
        for (int i = 0; i < count; i++) {
            UnsafeApi.putLong(sh + 16L * i, 64L * i);
            UnsafeApi.putInt(sh + 16L * i + 8, 8);
            UnsafeApi.putInt(sh + 16L * i + 12, 0);
        }
        long st = driver.hostAddress(status, 1);
        UnsafeApi.putByte(st, (byte) 0x7f);
        if (driver.addDirect(new long[] {header, segments, status}, new int[] {16, count * 16, 1},
                new boolean[] {false, false, true}, 3) < 0) {
            throw new IllegalStateException("queue full");
        }
        return st;
    }
}
