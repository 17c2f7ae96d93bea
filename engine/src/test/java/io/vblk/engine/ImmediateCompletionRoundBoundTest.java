package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.testkit.ForwardingBackend;

/**
 * rev13a: a request that completes without the back end (an unknown type: UNSUPP) writes its
 * status and gives its slot back inside the pop loop. A guest that watches the status byte and
 * re-posts the head at once (here: each time the loop asks the back end for free slots, once per
 * chain, as a vCPU on another core would) must not keep one round going: a round pops at most
 * one ring's worth of each queue, on the default path (no sub-batches, no submit budget) and on
 * the early-signal path, and the round that stopped at that bound reports work, so the thread
 * comes straight back (no sleep) for the rest.
 */
class ImmediateCompletionRoundBoundTest {
    /** Where the test gives up re-posting: far past any bound, so only the device can end the round. */
    private static final int GUEST_LIMIT = 10_000;

    /** @param earlySignal {@link Tuning#earlySignal()}: 0 off (the default), N fixed, -1 adaptive */
    @ParameterizedTest(name = "earlySignal {0}")
    @ValueSource(ints = {0, 8, Tuning.EARLY_SIGNAL_ADAPTIVE})
    void aRoundPopsOneRingsWorthOfReposts(int earlySignal) {
        RoundRig[] rigRef = new RoundRig[1];
        int[] head = {-1};
        int[] reposted = new int[1];
        ForwardingBackend io = new ForwardingBackend(IoBackends.open(BackendKind.NULL, null, 64)) {
            @Override
            public int freeSlots() {
                RoundRig rig = rigRef[0];
                if (rig != null && reposted[0] < GUEST_LIMIT && rig.lanes[0].status(0) != (byte) 0x7f) {
                    rig.lanes[0].repost(head[0], 0); // the guest saw the status: the same head again
                    reposted[0]++;
                }
                return super.freeSlots();
            }
        };
        Tuning tuning = Tuning.builder().threadingMode(ThreadingMode.SHARED).earlySignal(earlySignal).build();
        assertEquals(0, tuning.subBatch(), "the default tuning: no sub-batches");
        try (RoundRig rig = new RoundRig(tuning, null, false, 2, io)) {
            head[0] = rig.lanes[0].add(99, 0); // no such type: UNSUPP, completed inside the pop loop
            rig.lanes[0].driver.publishAvail();
            rig.lanes[1].offerReads(3);
            rigRef[0] = rig;

            int work = rig.thread.doWork();
            long first = rig.lanes[0].queue.counters.get(QueueCounters.REQUESTS);
            assertTrue(first <= RoundRig.QUEUE_SIZE, "one round popped " + first + " chains of a "
                    + RoundRig.QUEUE_SIZE + "-entry queue: only the test's guest ended it");
            assertEquals(3, rig.lanes[1].queue.counters.get(QueueCounters.REQUESTS), "the other queue had its turn");
            assertTrue(work > 0, "a round stopped at the bound reports work, so the thread does not sleep");

            rigRef[0] = null; // the guest stops re-posting; what it posted last is still in the ring
            rig.thread.doWork();
            long second = rig.lanes[0].queue.counters.get(QueueCounters.REQUESTS) - first;
            assertTrue(second > 0, "the guest's last re-post waits in the ring");
            assertEquals(reposted[0] + 1 - first, second, "the next round popped the rest");
        }
    }
}
