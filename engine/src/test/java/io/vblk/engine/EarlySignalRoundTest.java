package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.testkit.ForwardingBackend;

/**
 * {@link Tuning#earlySignal()} in rounds driven directly: a round publishes its first chains'
 * completions and interrupts a guest that waits for its next completion, then pops on; a guest
 * that is awake gets one lump at the round's end; the adaptive point follows the guest's answers.
 * Completions come at a poll (the rig's forwarder declines reaping inside submit).
 */
class EarlySignalRoundTest {
    private static Tuning early(int chains) {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).earlySignal(chains).build();
    }

    @Test
    @DisplayName("a guest waiting for its next completion gets the first chains' completions and an interrupt within the round")
    void guestWaitingIsSignalledEarly() {
        try (RoundRig rig = new RoundRig(early(4), null)) {
            rig.offerReads(10);
            assertTrue(!rig.driver.enableInterrupts(), "nothing used yet: the guest sleeps, used_event at 0");
            rig.thread.doWork();
            assertEquals(1, rig.thread.submits().earlyPublishes());
            assertEquals(2, rig.thread.submits().submittedBatches(), "the early four, then the other six at the round's end");
            assertEquals(1, rig.interrupt.read(), "interrupted once, within the round");
            assertEquals(4, rig.reapAll(), "the early four published; the rest with the back end");
            assertEquals(6, rig.queue.inflight);
            rig.thread.doWork();
            assertEquals(6, rig.reapAll(), "the next round completes the rest");
            assertEquals(10, rig.queue.counters.get(QueueCounters.COMPLETIONS), "each once");
            for (int slot = 0; slot < 10; slot++) {
                assertEquals(BlkRequestDescriptor.S_OK, rig.status(slot), "slot " + slot);
            }
        }
    }

    @Test
    @DisplayName("a guest that is awake (used_event behind used.idx) gets no early publish: one submission, one lump")
    void guestAwakeGetsOneLump() {
        try (RoundRig rig = new RoundRig(early(4), null)) {
            rig.offerReads(2);
            rig.thread.doWork();
            rig.thread.doWork(); // publishes the two (the first publish after set-up always interrupts)
            assertEquals(2, rig.reapAll());
            rig.interrupt.read();
            long batches = rig.thread.submits().submittedBatches();
            long early = rig.thread.submits().earlyPublishes();
            // The guest reaped and re-posted without re-arming: used_event stays at 0, used.idx is 2.
            for (int i = 0; i < 10; i++) {
                rig.add(BlkRequestDescriptor.T_IN, i * 8L);
            }
            rig.driver.publishAvail();
            rig.thread.doWork();
            assertEquals(early, rig.thread.submits().earlyPublishes(), "no early publish to an awake guest");
            assertEquals(batches + 1, rig.thread.submits().submittedBatches(), "one submission for the ten");
            assertEquals(0, rig.reapAll(), "nothing published before the next round");
            rig.thread.doWork();
            assertEquals(10, rig.reapAll());
        }
    }

    @Test
    @DisplayName("off (the default): a waiting guest still gets one lump at the round's end")
    void offByDefault() {
        try (RoundRig rig = new RoundRig(early(0), null)) {
            rig.offerReads(10);
            rig.driver.enableInterrupts();
            rig.thread.doWork();
            assertEquals(0, rig.thread.submits().earlyPublishes());
            assertEquals(1, rig.thread.submits().submittedBatches());
            assertEquals(0, rig.reapAll());
        }
    }

    @Test
    @DisplayName("adaptive: short rounds and a guest asleep at the round's end move the point earlier, one that answered moves it later")
    void adaptivePointFollowsAnswers() {
        RoundRig[] rigRef = new RoundRig[1];
        boolean[] answerAtSubmit = new boolean[1];
        ForwardingBackend io = new ForwardingBackend(IoBackends.open(BackendKind.NULL, null, 64)) {
            @Override
            public int submit() {
                int rc = super.submit();
                if (answerAtSubmit[0]) {
                    answerAtSubmit[0] = false;
                    rigRef[0].offerReads(1); // the guest, woken by the early publish, re-posts before the round ends
                }
                return rc;
            }
        };
        try (RoundRig rig = new RoundRig(early(Tuning.EARLY_SIGNAL_ADAPTIVE), null, io)) {
            rigRef[0] = rig;
            assertEquals(EarlySignal.START_CHAINS, rig.thread.submits().earlySignalChains(0));
            int expected = EarlySignal.START_CHAINS;
            while (expected > EarlySignal.MIN_CHAINS) {
                roundOf(rig, 10);
                expected -= EarlySignal.STEP_DOWN;
                assertEquals(expected, rig.thread.submits().earlySignalChains(0), "ten chains, short of the point: earlier");
            }
            assertEquals(0, rig.thread.submits().earlyPublishes());
            answerAtSubmit[0] = true;
            roundOf(rig, 10);
            assertEquals(1, rig.thread.submits().earlyPublishes());
            assertEquals(EarlySignal.MIN_CHAINS + EarlySignal.STEP_UP, rig.thread.submits().earlySignalChains(0),
                    "the guest re-posted before the round ended: woken too early, later next time");
            assertEquals(11, rig.queue.counters.get(QueueCounters.REQUESTS) - 10L * 14, "its re-post popped in the same round");
            roundOf(rig, 10);
            int point = EarlySignal.MIN_CHAINS + EarlySignal.STEP_UP - EarlySignal.STEP_DOWN;
            assertEquals(point, rig.thread.submits().earlySignalChains(0), "short of the point: earlier");
            roundOf(rig, point + 1);
            assertEquals(2, rig.thread.submits().earlyPublishes());
            assertEquals(point - EarlySignal.STEP_DOWN, rig.thread.submits().earlySignalChains(0),
                    "nobody answered before the round ended: earlier");
        }
    }

    /** The guest re-arms and posts {@code reads}; one round pops them; the next completes them and the guest reaps. */
    private static void roundOf(RoundRig rig, int reads) {
        rig.driver.enableInterrupts();
        rig.offerReads(reads);
        rig.thread.doWork();
        rig.thread.doWork();
        rig.reapAll();
    }
}
