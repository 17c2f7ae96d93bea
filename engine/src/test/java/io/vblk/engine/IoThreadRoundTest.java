package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;

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

    @Test
    @DisplayName("a round with a submit budget pops at most that many; the rest follow in later rounds, each chain completed once")
    void submitBudgetSplitsTheRoundsAndLosesNothing() {
        Tuning tuning = Tuning.builder().threadingMode(ThreadingMode.SHARED).submitBatch(4).build();
        try (RoundRig rig = new RoundRig(tuning, null)) {
            rig.offerReads(10);
            rig.clock.update(1_000_000);
            assertEquals(4, rig.thread.doWork(), "four popped: the budget");
            assertEquals(4, rig.queue.inflight);
            assertEquals(IoThread.WAKE_NOW, rig.thread.prepareSleep(), "chains left in the ring: no sleep");
            rig.thread.finishSleep();
            assertEquals(8, rig.thread.doWork(), "the first four completed, four more popped");
            assertEquals(4, rig.reapAll(), "the first four published before the next pop");
            assertEquals(6, rig.thread.doWork(), "four completed, the last two popped");
            assertEquals(2, rig.thread.doWork(), "the last two completed");
            assertEquals(0, rig.thread.doWork(), "idle");
            assertEquals(6, rig.reapAll());
            assertEquals(0, rig.queue.inflight);
            assertEquals(10, rig.queue.counters.get(QueueCounters.REQUESTS));
            assertEquals(10, rig.queue.counters.get(QueueCounters.COMPLETIONS), "each once");
            assertEquals(3, rig.queue.counters.get(QueueCounters.BATCHES), "4 + 4 + 2");
            for (int slot = 0; slot < 10; slot++) {
                assertEquals(BlkRequestDescriptor.S_OK, rig.status(slot), "slot " + slot);
            }
        }
    }

    @Test
    @DisplayName("without a budget (the default) one round pops every available chain")
    void noBudgetPopsEverything() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            assertEquals(Tuning.DEFAULT_SUBMIT_BATCH, Tuning.defaults().submitBatch());
            rig.offerReads(20);
            assertEquals(20, rig.thread.doWork());
            assertEquals(20, rig.thread.doWork());
            assertEquals(20, rig.reapAll());
        }
    }

    @Test
    @DisplayName("a budget is shared fairly: a round that ends on it makes the next start at the following queue")
    void submitBudgetTakesTheQueuesInTurn() {
        Tuning tuning = Tuning.builder().threadingMode(ThreadingMode.SHARED).submitBatch(4).build();
        try (RoundRig rig = new RoundRig(tuning, null, false, 2)) {
            rig.lanes[0].offerReads(8);
            rig.lanes[1].offerReads(8);
            long[][] expected = {{4, 0}, {4, 4}, {8, 4}, {8, 8}, {8, 8}};
            for (long[] popped : expected) {
                rig.thread.doWork();
                for (int q = 0; q < 2; q++) {
                    assertEquals(popped[q], rig.lanes[q].queue.counters.get(QueueCounters.REQUESTS), "queue " + q);
                }
            }
            rig.thread.doWork();
            for (int q = 0; q < 2; q++) {
                RoundRig.Lane lane = rig.lanes[q];
                assertEquals(8, lane.queue.counters.get(QueueCounters.COMPLETIONS), "queue " + q);
                java.util.Set<Integer> heads = new java.util.HashSet<>();
                for (int head = lane.driver.reap(); head >= 0; head = lane.driver.reap()) {
                    assertTrue(heads.add(head), "queue " + q + ": head " + head + " completed twice");
                }
                assertEquals(8, heads.size(), "queue " + q);
                for (int slot = 0; slot < 8; slot++) {
                    assertEquals(BlkRequestDescriptor.S_OK, lane.status(slot), "queue " + q + " slot " + slot);
                }
            }
        }
    }

    @Test
    @DisplayName("a queue the budget leaves unpopped is still quarantined in that round when the completion side found it faulty")
    void budgetDoesNotDelayQuarantine() {
        Tuning tuning = Tuning.builder().threadingMode(ThreadingMode.SHARED).submitBatch(4).build();
        try (RoundRig rig = new RoundRig(tuning, null, false, 2)) {
            rig.lanes[0].offerReads(8);
            rig.lanes[1].queue.faultReason = "a fault found while completing";
            rig.thread.doWork();
            assertEquals(4, rig.lanes[0].queue.counters.get(QueueCounters.REQUESTS));
            assertEquals(QueueLifecycle.BROKEN, rig.lanes[1].queue.state);
            assertEquals(List.of("a fault found while completing"), rig.broken);
        }
    }
}
