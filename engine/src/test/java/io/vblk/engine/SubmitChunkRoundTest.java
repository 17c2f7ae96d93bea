package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.aio.IoVector;
import io.vblk.testkit.ForwardingBackend;

/**
 * {@link Tuning#submitChunk()} in rounds driven directly ({@link IoThread#doWork()} on a thread
 * that never started): the back end gets each chunk as soon as it is prepared, while the rest of
 * the ring is still to be popped, and nothing is published before the round's end (one lump, one
 * interrupt, as without chunks).
 */
class SubmitChunkRoundTest {
    /** The null back end behind a forwarder that records, at each submit, what had been prepared in all and what this submit hands over. */
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

    private static Tuning chunk(int chunk, int submitBatch) {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).submitChunk(chunk).submitBatch(submitBatch).build();
    }

    @Test
    @DisplayName("a chunk reaches the back end before the ring is fully popped, and nothing is published before the round's end")
    void chunksGoOutWhileTheRingIsPopped() {
        RecordingBackend io = new RecordingBackend();
        try (RoundRig rig = new RoundRig(chunk(4, 0), null, io)) {
            rig.offerReads(10);
            assertEquals(10, rig.thread.doWork(), "ten popped, nothing reaped within the round");
            assertEquals(List.of(4, 8, 10), io.preparedAtSubmit, "submitted at 4 and 8 of the 10 offered, the rest at the round's end");
            assertEquals(List.of(4, 4, 2), io.pendingAtSubmit, "each submission hands over its own chunk");
            assertEquals(3, rig.thread.submits().submittedBatches());
            assertEquals(0, rig.reapAll(), "no completion published within the round that popped them");
            assertEquals(10, rig.queue.inflight);
            assertEquals(10, rig.thread.doWork(), "the next round reaps all ten");
            assertEquals(10, rig.reapAll(), "in one lump");
            assertEquals(0, rig.thread.doWork(), "idle");
            assertEquals(10, rig.queue.counters.get(QueueCounters.COMPLETIONS), "each once");
            for (int slot = 0; slot < 10; slot++) {
                assertEquals(BlkRequestDescriptor.S_OK, rig.status(slot), "slot " + slot);
            }
        }
    }

    @Test
    @DisplayName("a round that pops an exact number of chunks submits each once and nothing empty at its end")
    void exactChunksNoEmptySubmit() {
        RecordingBackend io = new RecordingBackend();
        try (RoundRig rig = new RoundRig(chunk(5, 0), null, io)) {
            rig.offerReads(10);
            rig.thread.doWork();
            assertEquals(List.of(5, 5), io.pendingAtSubmit);
            assertEquals(10, rig.thread.doWork());
            assertEquals(10, rig.reapAll());
        }
    }

    @Test
    @DisplayName("a chunk counts over the round's queues, and the round's budget still takes the queues in turn")
    void chunksSpanQueuesAndKeepTheBudget() {
        try (RoundRig rig = new RoundRig(chunk(4, 0), null, false, 2)) {
            rig.lanes[0].offerReads(3);
            rig.lanes[1].offerReads(3);
            rig.thread.doWork();
            assertEquals(2, rig.thread.submits().submittedBatches(), "3 + 1 at four operations, the other 2 at the round's end");
            rig.thread.doWork();
            assertEquals(3, rig.lanes[0].queue.counters.get(QueueCounters.COMPLETIONS));
            assertEquals(3, rig.lanes[1].queue.counters.get(QueueCounters.COMPLETIONS));
        }
        try (RoundRig rig = new RoundRig(chunk(2, 4), null, false, 2)) {
            rig.lanes[0].offerReads(8);
            rig.lanes[1].offerReads(8);
            long[][] expected = {{4, 0}, {4, 4}, {8, 4}, {8, 8}};
            for (long[] popped : expected) {
                rig.thread.doWork();
                for (int q = 0; q < 2; q++) {
                    assertEquals(popped[q], rig.lanes[q].queue.counters.get(QueueCounters.REQUESTS), "queue " + q);
                }
            }
            rig.thread.doWork();
            for (int q = 0; q < 2; q++) {
                assertEquals(8, rig.lanes[q].queue.counters.get(QueueCounters.COMPLETIONS), "queue " + q);
            }
        }
    }

    @Test
    @DisplayName("on a back end that finishes inside submit (null) the chunks' completions are published in the same round")
    void sameRoundCompletionsAfterChunks() {
        try (RoundRig rig = new RoundRig(chunk(4, 0), null, true)) {
            rig.offerReads(10);
            rig.thread.doWork();
            assertEquals(3, rig.thread.submits().submittedBatches());
            assertEquals(10, rig.reapAll(), "all ten, chunks included, completed in the round that popped them");
            assertTrue(rig.queue.inflight == 0);
        }
    }

    @Test
    @DisplayName("a chunk outside 0..65536 is refused")
    void rangeChecked() {
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> Tuning.builder().submitChunk(-1));
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> Tuning.builder().submitChunk(65537));
    }

    @Test
    @DisplayName("without a chunk (the default) a round hands everything it popped over in one submission")
    void withoutChunkOneSubmissionPerRound() {
        assertEquals(Tuning.DEFAULT_SUBMIT_CHUNK, Tuning.builder().build().submitChunk(), "vblk.submitChunk is unset in tests");
        RecordingBackend io = new RecordingBackend();
        try (RoundRig rig = new RoundRig(chunk(0, 0), null, io)) {
            rig.offerReads(10);
            rig.thread.doWork();
            assertEquals(List.of(10), io.preparedAtSubmit);
        }
    }
}
