package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.FaultPoints;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A guest-memory fault the JVM delivers late (GuestFaults) at the return from the back end's
 * prepare (a method return is where compiled code polls for it): the back end has queued the
 * operation, but the request's stage still says "claimed". The handler gave every claimed
 * request back to the pool, so the slot was free while its operation ran. Two queues on one
 * I/O thread share the pool: queue 1's next request claimed that very slot (the free list is a
 * stack), and queue 0's operation, completing, finished queue 1's request before its own I/O
 * had run; then queue 1's completed it again: a used element pushed twice for one head (and a
 * read reported done before its data arrived). A request that may have reached the back end
 * must stay counted and held until its completion or the drain's give-up. The fault is thrown
 * through {@link FaultPoints#HANDING}.
 */
class HandedOnAttackTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @Test
    void aRequestTheBackEndMayHoldIsNeverGivenToAnotherQueue() throws Exception {
        try (FaultPointRig rig = new FaultPointRig(dir, "handed", 2)) {
            assertEquals(S_OK, rig.roundTrip(0));
            assertEquals(S_OK, rig.roundTrip(1));
            // Both queues have a request when the thread wakes: queue 0's meets the fault
            // after its back end queued it; queue 1's is popped in the same round. Queue 0's is
            // published first: a thread still ending its last round re-checks the rings before
            // it sleeps, and had it found queue 1's alone, the one armed fault would have landed
            // on queue 1 (a CI run on a loaded machine did, and waited for queue 1 in vain).
            FaultPoints.arm(FaultPoints.HANDING);
            rig.addRead(0);
            rig.driver(0).publishAvail();
            rig.addRead(1);
            rig.driver(1).publishAvail();
            rig.kick(0);
            rig.kick(1);
            assertTrue(rig.awaitUsed(1) >= 0, "queue 1's request completed");
            assertTrue(FaultPoints.fired());
            assertTrue(rig.device.isBroken(0), "queue 0 quarantined where the fault landed");
            // Drain both; then queue 1 must have exactly its one used element more.
            rig.stopQueue(0);
            rig.stopQueue(1);
            SplitQueueDriver q1 = rig.driver(1);
            assertEquals(2, q1.usedIdx(), "queue 1: one used element per request (its warm-up and this one)");
            assertEquals(SplitQueueDriver.NONE, q1.reap(), "nothing more in queue 1's used ring");
            IoThread t = rig.thread();
            RequestPool pool = t.dispatcherPool();
            assertEquals(pool.size(), pool.available(), "every request slot back once both queues drained");
            assertEquals(t.backend().depth(), t.backend().freeSlots(), "every back-end slot back");
        }
    }
}
