package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.FaultPoints;

/**
 * A late guest-memory fault (GuestFaults) that lands inside the back end's prepare, after the
 * request took a back-end slot and before that slot is queued anywhere: the queue is
 * quarantined (a request being handed on cannot be undone exactly), the request slot is given
 * back, but the back end's slot is in no list. Before the fix the drain reclaimed lost back-end
 * slots only when it gave requests up, which it does not here (none is in flight), so every
 * such fault cost the device one back-end slot for good, across resets; an attacker who can
 * repeat late faults on a shared thread (shrink, reset, shrink) drains a victim's back end until
 * it pops nothing (a hang). The fault is thrown through {@link FaultPoints#PREPARE_TAKEN}.
 */
class LostBackendSlotAttackTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @Test
    void aBackEndSlotLostInPrepareComesBackAtTheDrain() throws Exception {
        try (FaultPointRig rig = new FaultPointRig(dir, "prepare", 1)) {
            assertEquals(S_OK, rig.roundTrip(0));
            IoThread t = rig.thread();
            int depth = t.backend().depth();
            for (int round = 0; round < 3; round++) {
                FaultPoints.arm(FaultPoints.PREPARE_TAKEN);
                rig.addRead(0);
                rig.publishAndKick(0);
                rig.awaitQuarantined(0);
                rig.stopQueue(0);
                assertEquals(depth, t.backend().freeSlots(), "round " + round + ": the back end's slot taken in"
                        + " prepare came back with the drain");
                rig.restartQueue(0);
                assertEquals(S_OK, rig.roundTrip(0));
            }
        }
    }
}
