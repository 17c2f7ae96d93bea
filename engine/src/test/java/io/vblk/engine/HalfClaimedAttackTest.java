package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.FaultPoints;

/**
 * A guest-memory fault the JVM delivers late (GuestFaults) can land between any two statements
 * of an interpreted frame with a safepoint pending, including inside a request's claim, between
 * naming its queue and counting it in flight. The fault handler gives back every claimed
 * request and takes one off its queue's in-flight count: there, one it never added. The count
 * then read one LESS than the queue really had in flight (-1 here), and from then on a drain
 * returned with a request still in flight: the VMM may unmap the memory that request's I/O
 * still writes (outside the guest's regions if the address is reused). The count must go up
 * before the request names its queue, so a fault in between can only leave it one too high:
 * the quarantined queue's drain gives that up (LOST), never returns early. The fault is
 * thrown through {@link FaultPoints#CLAIMING}.
 */
class HalfClaimedAttackTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @Test
    void aFaultInsideAClaimNeverLeavesTheInFlightCountLow() throws Exception {
        try (FaultPointRig rig = new FaultPointRig(dir, "claim", 1)) {
            assertEquals(S_OK, rig.roundTrip(0));
            FaultPoints.arm(FaultPoints.CLAIMING);
            rig.addRead(0);
            rig.publishAndKick(0);
            rig.awaitQuarantined(0);
            rig.stopQueue(0);
            DeviceQueue queue = rig.queue(0);
            assertTrue(queue.inflight >= 0, "in-flight count below what is in flight: " + queue.inflight);
            assertEquals(0, queue.inflight, "drained");
            rig.restartQueue(0);
            assertEquals(S_OK, rig.roundTrip(0));
            assertEquals(0, queue.inflight, "one request in, one out");
        }
    }
}
