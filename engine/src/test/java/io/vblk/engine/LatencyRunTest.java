package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.HdrHistogram.Histogram;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * The completion path records a batch's latencies as runs of equal values (one recorder call
 * per run): what the histogram holds must be exactly what one recording per request gave, per
 * queue, and recorded by the end of the batch. Rounds driven directly, time from the rig's clock.
 */
class LatencyRunTest {
    private static final Tuning LATENCY = Tuning.builder().threadingMode(ThreadingMode.SHARED).recordLatency(true).build();

    @Test
    @DisplayName("runs of one value, then another, in one batch: every request counted at its own latency")
    void runsKeepEveryCountAtItsValue() {
        try (RoundRig rig = new RoundRig(LATENCY, null)) {
            rig.clock.update(1_000);
            rig.offerReads(5);
            assertEquals(5, rig.thread.doWork(), "five popped at t=1000; they finish at the next poll");
            rig.clock.update(4_000);
            rig.offerReads(3);
            rig.thread.doWork(); // the five finish (latency 3000) in one batch; three more popped at t=4000
            Histogram h = rig.queue.latency();
            assertEquals(5, h.getTotalCount(), "the first batch's run is recorded by its end");
            assertEquals(5, h.getCountAtValue(3_000));
            rig.clock.update(9_000);
            rig.offerReads(2);
            rig.thread.doWork(); // the three finish (latency 5000); two popped at t=9000
            rig.clock.update(9_500);
            rig.thread.doWork(); // the two finish (latency 500)
            h = rig.queue.latency();
            assertEquals(10, h.getTotalCount());
            assertEquals(5, h.getCountAtValue(3_000));
            assertEquals(3, h.getCountAtValue(5_000));
            assertEquals(2, h.getCountAtValue(500));
            assertEquals(10, rig.reapAll());
        }
    }

    @Test
    @DisplayName("two queues finishing in one batch with one latency: each queue's histogram gets its own requests")
    void aRunNeverSpansTwoQueues() {
        try (RoundRig rig = new RoundRig(LATENCY, null, false, 2)) {
            rig.clock.update(2_000);
            rig.lanes[0].offerReads(4);
            rig.lanes[1].offerReads(2);
            rig.lanes[0].offerReads(1);
            assertEquals(7, rig.thread.doWork());
            rig.clock.update(2_700);
            rig.thread.doWork();
            assertEquals(5, rig.lanes[0].queue.latency().getTotalCount());
            assertEquals(5, rig.lanes[0].queue.latency().getCountAtValue(700));
            assertEquals(2, rig.lanes[1].queue.latency().getTotalCount());
            assertEquals(2, rig.lanes[1].queue.latency().getCountAtValue(700));
        }
    }
}
