package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.aio.IoVector;
import io.vblk.testkit.ForwardingBackend;

/**
 * {@link Tuning#subBatch()} in rounds driven directly ({@link IoThread#doWork()} on a thread that
 * never started): the back end gets each sub-batch while the rest of the ring is still to be
 * popped, what finished meanwhile is published within the round, and the round's budget still
 * takes the queues in turn.
 */
class SubBatchRoundTest {
    /**
     * The null back end behind a forwarder that records, at each submit, how many operations had
     * been prepared in all and how many this submit hands over. Completions come at the next poll.
     */
    private static final class RecordingBackend extends ForwardingBackend {
        final List<Integer> preparedAtSubmit = new ArrayList<>();
        final List<Integer> pendingAtSubmit = new ArrayList<>();
        private int prepared;

        RecordingBackend() {
            super(IoBackends.open(BackendKind.NULL, null, 64));
        }

        @Override
        public int prepareRead(long offset, IoVector buffers, long userData) {
            prepared++;
            return super.prepareRead(offset, buffers, userData);
        }

        @Override
        public int submit() {
            preparedAtSubmit.add(prepared);
            pendingAtSubmit.add(pendingSubmit());
            return super.submit();
        }
    }

    private static Tuning subBatch(int subBatch, int submitBatch) {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).subBatch(subBatch).submitBatch(submitBatch).build();
    }

    @Test
    @DisplayName("a sub-batch reaches the back end before the ring is fully popped, and its completions are published within the round")
    void subBatchesGoOutWhileTheRingIsPopped() {
        RecordingBackend io = new RecordingBackend();
        try (RoundRig rig = new RoundRig(subBatch(4, 0), null, io)) {
            rig.offerReads(10);
            rig.clock.update(1_000_000);
            int work = rig.thread.doWork();
            assertEquals(List.of(4, 8, 10), io.preparedAtSubmit, "submitted at 4 and 8 of the 10 offered, the rest at the round's end");
            assertEquals(List.of(4, 4, 2), io.pendingAtSubmit, "each submission hands over its own sub-batch");
            assertEquals(3, rig.thread.submits().submittedBatches());
            assertEquals(10 + 8, work, "ten popped, and the first two sub-batches reaped between submissions");
            assertEquals(8, rig.reapAll(), "the first two sub-batches published within the round that popped them");
            assertEquals(2, rig.queue.inflight, "only the last, short sub-batch still with the back end");
            assertEquals(2, rig.thread.doWork(), "the next round completes it");
            assertEquals(2, rig.reapAll());
            assertEquals(0, rig.thread.doWork(), "idle");
            assertEquals(10, rig.queue.counters.get(QueueCounters.REQUESTS));
            assertEquals(10, rig.queue.counters.get(QueueCounters.COMPLETIONS), "each once");
            for (int slot = 0; slot < 10; slot++) {
                assertEquals(BlkRequestDescriptor.S_OK, rig.status(slot), "slot " + slot);
            }
        }
    }

    @Test
    @DisplayName("without a sub-batch (the default) a round hands everything it popped over in one submission")
    void withoutSubBatchOneSubmissionPerRound() {
        assertEquals(Tuning.DEFAULT_SUB_BATCH, Tuning.builder().build().subBatch(), "vblk.subBatch is unset in tests");
        RecordingBackend io = new RecordingBackend();
        try (RoundRig rig = new RoundRig(subBatch(0, 0), null, io)) {
            rig.offerReads(10);
            assertEquals(10, rig.thread.doWork());
            assertEquals(List.of(10), io.preparedAtSubmit);
            assertEquals(0, rig.reapAll(), "nothing published before the next round");
            assertEquals(10, rig.thread.doWork());
            assertEquals(10, rig.reapAll());
        }
    }

    @Test
    @DisplayName("a sub-batch counts over the round's queues: one submission may hold chains of two queues")
    void subBatchSpansQueues() {
        try (RoundRig rig = new RoundRig(subBatch(4, 0), null, false, 2)) {
            rig.lanes[0].offerReads(3);
            rig.lanes[1].offerReads(3);
            rig.thread.doWork();
            assertEquals(2, rig.thread.submits().submittedBatches(), "3 + 1 at four chains, the other 2 at the round's end");
            assertEquals(3, rig.lanes[0].queue.counters.get(QueueCounters.REQUESTS));
            assertEquals(3, rig.lanes[1].queue.counters.get(QueueCounters.REQUESTS));
            assertEquals(3, rig.lanes[0].queue.counters.get(QueueCounters.COMPLETIONS), "queue 0's three in the first sub-batch");
            assertEquals(1, rig.lanes[1].queue.counters.get(QueueCounters.COMPLETIONS), "queue 1's first in the first sub-batch");
        }
    }

    @Test
    @DisplayName("with sub-batches the round's budget still takes the queues in turn, and every chain completes once")
    void budgetFairnessKept() {
        try (RoundRig rig = new RoundRig(subBatch(2, 4), null, false, 2)) {
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
                Set<Integer> heads = new HashSet<>();
                for (int head = lane.driver.reap(); head >= 0; head = lane.driver.reap()) {
                    assertTrue(heads.add(head), "queue " + q + ": head " + head + " completed twice");
                }
                assertEquals(8, heads.size(), "queue " + q);
                assertEquals(0, lane.queue.inflight, "queue " + q);
            }
        }
    }

    @Test
    @DisplayName("a throttle still stops a round between sub-batches")
    void throttleStopsBetweenSubBatches() {
        // 1000 IOPS with a 2 ms burst: a few requests at once, then one per millisecond.
        Throttle throttle = new Throttle(1_000, 0, 2);
        try (RoundRig rig = new RoundRig(subBatch(1, 0), throttle)) {
            rig.offerReads(10);
            rig.clock.update(1_000_000_000L);
            rig.thread.doWork();
            long popped = rig.queue.counters.get(QueueCounters.REQUESTS);
            assertTrue(popped > 0 && popped < 10, "the burst only: " + popped);
            assertTrue(rig.queue.throttledUntilNs > rig.clock.nanoTime(), "a deadline in the future");
        }
    }

    @Test
    @DisplayName("a sub-batch outside 0..65536 is refused")
    void rangeChecked() {
        assertThrows(IllegalArgumentException.class, () -> Tuning.builder().subBatch(-1));
        assertThrows(IllegalArgumentException.class, () -> Tuning.builder().subBatch(65537));
    }

    /**
     * Regression (review 9a): completions published between sub-batches let a guest post anew
     * within the round; one reposting a request per completion (as a vCPU on another core does)
     * kept one round going for ever, so the inbox (stop, drain, memory commands) and the thread's
     * other queues waited. A round now pops at most one ring's worth of each queue. The guest here
     * reacts at every submit and gives up after {@code LIMIT} reposts only so that a failure ends.
     */
    @Test
    @DisplayName("a guest reposting per completion cannot keep one round going")
    void aRoundEndsWhateverTheGuestPosts() {
        final int limit = 20_000;
        RoundRig[] rigRef = new RoundRig[1];
        int[] reposted = new int[1];
        ForwardingBackend io = new ForwardingBackend(IoBackends.open(BackendKind.NULL, null, 64)) {
            @Override
            public int submit() {
                int rc = super.submit();
                RoundRig rig = rigRef[0];
                if (rig != null && reposted[0] < limit) {
                    int seen = 0;
                    while (rig.lanes[0].driver.reap() >= 0) {
                        seen++;
                    }
                    if (seen > 0) {
                        rig.lanes[0].offerReads(seen);
                        reposted[0] += seen;
                    }
                }
                return rc;
            }
        };
        Tuning tuning = Tuning.builder().threadingMode(ThreadingMode.SHARED).subBatch(4).submitBatch(0).build();
        try (RoundRig rig = new RoundRig(tuning, null, false, 2, io)) {
            rigRef[0] = rig;
            rig.lanes[0].offerReads(8);
            rig.lanes[1].offerReads(3);
            rig.thread.doWork();
            long q0 = rig.lanes[0].queue.counters.get(QueueCounters.REQUESTS);
            long q1 = rig.lanes[1].queue.counters.get(QueueCounters.REQUESTS);
            assertTrue(q0 <= RoundRig.QUEUE_SIZE, "one round popped " + q0 + " chains of queue 0 (queue size "
                    + RoundRig.QUEUE_SIZE + ")");
            assertEquals(3, q1, "the other queue had its turn in the same round");
        }
    }
}
