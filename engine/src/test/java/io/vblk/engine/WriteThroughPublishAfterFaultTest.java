package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/**
 * rev14b L4: on a write-through device (FLUSH not negotiated) a fault thrown out of the route
 * while the flush's covered writes are handed over leaves the rest covered; the next round's
 * {@link WriteThrough#afterPoll()} hands them over. When that round reaped and popped nothing,
 * it never ended the batch: their used entries were written and used.idx never published (the
 * guest waited until some later completion). A round now ends the batch whenever the route has
 * unpublished completions. The fault is injected where the completion path reads the clock
 * (latency recording), after the first write's used entry is written.
 */
class WriteThroughPublishAfterFaultTest {
    @Test
    void writesHandedOverAfterARouteFaultArePublishedInAnIdleRound() {
        Tuning tuning = Tuning.builder().threadingMode(ThreadingMode.SHARED).recordLatency(true).build();
        try (RoundRig rig = new RoundRig(tuning, null, false, 1, null, c -> { }, 1L << BlkFeatures.FLUSH)) {
            rig.lanes[0].add(BlkRequestDescriptor.T_OUT, 0, false);
            rig.lanes[0].add(BlkRequestDescriptor.T_OUT, 8, false);
            rig.driver.publishAvail();
            assertEquals(2, rig.thread.doWork(), "both writes popped and submitted");
            rig.thread.doWork(); // reaps them: held for the flush, which goes out
            assertEquals(0, rig.reapAll(), "not durable yet: nothing completed");
            rig.clock.failNext = new IllegalStateException("a late fault in the route");
            assertThrows(IllegalStateException.class, rig.thread::doWork, "the flush's completion meets the fault");
            assertEquals(0, rig.thread.doWork(), "a round that reaps and pops nothing hands over the second write");
            assertEquals(2, rig.reapAll(), "and publishes both used entries");
        }
    }
}
