package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.sys.FaultPoints;

/**
 * {@link FaultRecovery}, the I/O thread's fault bookkeeping, driven directly on a thread that is
 * never started ({@link RoundRig}: real memfd guest memory, the null back end behind a
 * forwarding seam). A lost completion is made for real: the back end's completion is reaped by a
 * sink that throws the JVM's guest-memory fault error, as a late fault inside the reap would, so
 * the back end counts nothing in flight while the engine still counts the request.
 */
class FaultRecoveryTest {
    private static Tuning inline() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
    }

    /** Pops and submits one read, then loses its completion inside the back end's reap. */
    private static void loseOneCompletion(RoundRig rig) {
        rig.offerReads(1);
        assertEquals(1, rig.thread.doWork(), "popped and submitted");
        assertEquals(1, rig.queue.inflight);
        assertEquals(1, rig.io.inFlight(), "the back end still owes its completion");
        assertThrows(InternalError.class, () -> rig.io.poll((userData, result) -> {
            throw new InternalError(FaultPoints.MESSAGE);
        }, 1));
        assertEquals(0, rig.io.inFlight(), "the back end owes nothing any more");
        assertEquals(1, rig.queue.inflight, "but the engine still counts the request in flight");
    }

    /** Calls settleLost until it returns true (at most {@code rounds} times); returns the calls it took. */
    private static int settle(RoundRig rig, FaultRecovery.LostWatch w, int rounds) {
        for (int i = 1; i <= rounds; i++) {
            if (rig.thread.faults().settleLost(rig.queue, w)) {
                return i;
            }
        }
        return -1;
    }

    @Test
    @DisplayName("a bug caught in a round stops every queue of the thread, and the owner hears why")
    void aBugQuarantinesTheThreadsQueues() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            rig.thread.faults().caught(new IllegalStateException("a bug"));
            assertEquals(QueueLifecycle.BROKEN, rig.queue.state);
            assertEquals(1, rig.broken.size());
            assertTrue(rig.broken.get(0).contains("internal error") && rig.broken.get(0).contains("a bug"), rig.broken.get(0));
            assertFalse(rig.thread.evidence().suspect, "a bug is not attributed: nothing turns suspect");
        }
    }

    @Test
    @DisplayName("a guest-memory fault with no evidence of a shrunk file is quarantined where it landed")
    void aFaultWithoutEvidenceQuarantinesWhereItLanded() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            rig.thread.faults().caught(new InternalError(FaultPoints.MESSAGE));
            assertEquals(QueueLifecycle.BROKEN, rig.queue.state);
            assertFalse(rig.thread.evidence().suspect);
        }
    }

    @Test
    @DisplayName("a drain of a quarantined queue waits while the back end owes work, then gives the lost request up, never completing it")
    void settleLostGivesUpOnlyWhenNothingCanComplete() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            rig.offerReads(1);
            rig.thread.doWork();
            rig.thread.faults().quarantine(rig.queue, "test: quarantined with a request in flight");
            FaultRecovery.LostWatch w = new FaultRecovery.LostWatch();
            for (int i = 0; i < 5; i++) {
                assertFalse(rig.thread.faults().settleLost(rig.queue, w), "the back end still reports the read in flight");
            }
            assertEquals(1, rig.queue.inflight);
            assertEquals(0, rig.queue.counters.get(QueueCounters.LOST));
        }
        try (RoundRig rig = new RoundRig(inline(), null)) {
            loseOneCompletion(rig);
            rig.thread.faults().quarantine(rig.queue, "test: the fault quarantined it");
            RequestPool pool = rig.thread.dispatcherPool();
            FaultRecovery.LostWatch w = new FaultRecovery.LostWatch();
            int calls = settle(rig, w, 10);
            assertEquals(2, calls, "one call publishes the completion fence, the next finds it passed (inline route)");
            assertEquals(0, rig.queue.inflight);
            assertEquals(1, rig.queue.counters.get(QueueCounters.LOST));
            assertEquals(pool.size(), pool.available(), "its request slot is back");
            assertEquals(rig.io.depth(), rig.io.freeSlots(), "the back end holds no slot (its lost-slot reclaim: aio LateFaultAccountingTest)");
            assertEquals(QueueLifecycle.BROKEN, rig.queue.state, "still quarantined: needs a reset");
            assertFalse(rig.queue.dirty);
            assertEquals((byte) 0x7f, rig.status(0), "never completed into guest memory");
            assertEquals(0, rig.reapAll(), "no used element");
        }
    }

    @Test
    @DisplayName("a suspect thread: a drain that finds a request nothing can complete quarantines its queue and gives the request up")
    void suspectThreadQuarantinesTheQueueThatLostARequest() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            loseOneCompletion(rig);
            rig.thread.evidence().suspect = true; // as a fault attributed elsewhere, caught in the reap, leaves it
            assertEquals(0, rig.thread.doWork(), "nothing to do");
            assertTrue(rig.thread.evidence().suspect, "still suspect: a request is in flight");
            assertEquals(QueueLifecycle.RUNNING, rig.queue.state, "the queue runs on until a drain finds the loss");
            FaultRecovery.LostWatch w = new FaultRecovery.LostWatch();
            assertEquals(2, settle(rig, w, 10));
            assertEquals(QueueLifecycle.BROKEN, rig.queue.state);
            assertEquals(1, rig.broken.size());
            assertTrue(rig.broken.get(0).contains("lost to a guest memory fault"), rig.broken.get(0));
            assertEquals(1, rig.queue.counters.get(QueueCounters.LOST));
            assertEquals(0, rig.queue.inflight);
            rig.thread.doWork();
            assertFalse(rig.thread.evidence().suspect, "nothing in flight any more: trusted again");
        }
    }

    @Test
    @DisplayName("a suspect thread whose requests all complete is trusted again and loses nothing")
    void suspectClearsWhenEverythingCompletes() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            rig.offerReads(2);
            rig.thread.doWork();
            rig.thread.evidence().suspect = true;
            FaultRecovery.LostWatch w = new FaultRecovery.LostWatch();
            assertFalse(rig.thread.faults().settleLost(rig.queue, w), "the back end still owes the reads");
            rig.thread.doWork(); // reaps both
            assertEquals(0, rig.queue.inflight);
            assertFalse(rig.thread.evidence().suspect);
            assertFalse(rig.thread.faults().settleLost(rig.queue, w), "a live queue with nothing lost: the drain goes on as usual");
            assertEquals(QueueLifecycle.RUNNING, rig.queue.state);
            assertEquals(0, rig.queue.counters.get(QueueCounters.LOST));
            assertEquals(2, rig.reapAll());
        }
    }
}
