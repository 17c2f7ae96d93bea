package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.HdrHistogram.Histogram;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.testkit.RingTamperer;

/**
 * {@link IoThread#doWork()} driven directly, as Aeron tests its agents: no thread runs, the test
 * calls the rounds and sets the time through the injected clock.
 */
class IoThreadRoundTest {
    private static Tuning inline() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
    }

    @Test
    @DisplayName("a round pops and submits what the guest offered; the next round completes it; then nothing")
    void roundsPopThenComplete() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            assertEquals(0, rig.thread.doWork(), "an empty ring: no work");
            rig.offerReads(3);
            rig.clock.update(1_000_000);
            assertEquals(3, rig.thread.doWork(), "three chains popped and submitted");
            assertEquals(3, rig.queue.inflight);
            assertEquals((byte) 0x7f, rig.status(0), "not completed within the round that submitted it");
            assertEquals(0, rig.reapAll(), "nothing published yet");
            rig.clock.advance(7_000);
            assertEquals(3, rig.thread.doWork(), "three completions reaped");
            assertEquals(0, rig.queue.inflight);
            assertEquals(3, rig.reapAll(), "used.idx published once for the batch");
            for (int slot = 0; slot < 3; slot++) {
                assertEquals(BlkRequestDescriptor.S_OK, rig.status(slot));
            }
            assertEquals(0, rig.thread.doWork(), "idle again");
            assertEquals(3, rig.queue.counters.get(QueueCounters.COMPLETIONS));
            assertEquals(1, rig.queue.counters.get(QueueCounters.INTERRUPTS), "one interrupt for the batch");
        }
    }

    @Test
    @DisplayName("a back end that finishes in submit (null): popped, submitted and completed in one round, one interrupt, no eventfd")
    void nullBackEndCompletesInTheSubmittingRound() {
        try (RoundRig rig = new RoundRig(inline(), null, true)) {
            rig.offerReads(3);
            rig.clock.update(1_000_000);
            assertEquals(6, rig.thread.doWork(), "three popped and three completed");
            assertEquals(0, rig.queue.inflight, "every slot back in the pool");
            assertEquals(3, rig.reapAll(), "used.idx published in the same round");
            for (int slot = 0; slot < 3; slot++) {
                assertEquals(BlkRequestDescriptor.S_OK, rig.status(slot));
            }
            assertEquals(1, rig.queue.counters.get(QueueCounters.INTERRUPTS), "one interrupt for the round");
            assertEquals(1, rig.interrupt.read(), "the call eventfd was written once");
            assertFalse(rig.io.completionsReady());
            assertEquals(0, rig.io.completionEvent().await(0), "no completion eventfd write, so no epoll wake-up to come");
            assertEquals(0, rig.thread.doWork(), "idle: nothing left for a later round");
            assertEquals(-1, rig.thread.prepareSleep(), "and the thread may sleep without a timeout");
            rig.thread.finishSleep();
        }
    }

    @Test
    @DisplayName("a refused request and a null-back-end read in one round share one used.idx publish and one interrupt")
    void immediateAndSubmitFinishedShareOneBatch() {
        try (RoundRig rig = new RoundRig(inline(), null, true)) {
            rig.addRead(0);
            rig.add(0x7fff, 0); // an unsupported type: refused by the parser, completed immediately
            rig.driver.publishAvail();
            rig.thread.doWork();
            assertEquals(2, rig.reapAll());
            assertEquals(BlkRequestDescriptor.S_OK, rig.status(0));
            assertEquals(BlkRequestDescriptor.S_UNSUPP, rig.status(1));
            assertEquals(1, rig.queue.counters.get(QueueCounters.INTERRUPTS), "one interrupt for both");
        }
    }

    @Test
    @DisplayName("latency is the injected clock's time between the popping round and the completing round")
    void latencyFromTheInjectedClock() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            rig.offerReads(1);
            rig.clock.update(5_000_000);
            rig.thread.doWork();
            rig.clock.advance(2_500);
            rig.thread.doWork();
            Histogram latency = rig.queue.latency();
            assertEquals(1, latency.getTotalCount());
            assertTrue(latency.valuesAreEquivalent(2_500, latency.getMaxValue()),
                    "recorded " + latency.getMaxValue() + " ns, the clock moved 2500 ns");
        }
    }

    @Test
    @DisplayName("the throttle follows the injected clock: a frozen clock stops popping, advancing it resumes")
    void throttleFollowsTheClock() {
        // 1000 IOPS with a 2 ms burst: a few requests at once, then one per millisecond.
        Throttle throttle = new Throttle(1_000, 0, 2);
        try (RoundRig rig = new RoundRig(inline(), throttle)) {
            rig.offerReads(10);
            rig.clock.update(1_000_000_000L);
            int first = rig.thread.doWork();
            assertTrue(first > 0 && first < 10, "the burst only: " + first);
            int reaped = rig.thread.doWork(); // completes the burst; the clock has not moved
            assertEquals(first, reaped, "only completions: the throttle allows no pop at the same instant");
            assertTrue(rig.queue.throttledUntilNs > rig.clock.nanoTime(), "a deadline in the future");
            long throttled = rig.queue.counters.get(QueueCounters.THROTTLED);
            assertTrue(throttled > 0);
            int popped = first;
            for (int round = 0; round < 100 && popped < 10; round++) {
                rig.clock.advance(1_000_000);
                int before = (int) rig.queue.counters.get(QueueCounters.REQUESTS);
                rig.thread.doWork();
                popped += (int) rig.queue.counters.get(QueueCounters.REQUESTS) - before;
            }
            assertEquals(10, popped, "every request once the clock moved on");
        }
    }

    @Test
    @DisplayName("a ring error found in a round quarantines the queue, reports it, and later rounds leave it alone")
    void ringErrorInARoundQuarantines() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            RingTamperer.of(rig.driver).offerRaw(RoundRig.QUEUE_SIZE + 3); // a head beyond the queue size (2.7.5.3)
            rig.driver.publishAvail();
            rig.thread.doWork();
            assertEquals(QueueLifecycle.BROKEN, rig.queue.state);
            assertEquals(1, rig.broken.size(), "the owner heard of it once");
            rig.offerReads(1);
            assertEquals(0, rig.thread.doWork(), "a broken queue is not popped");
        }
    }
}
