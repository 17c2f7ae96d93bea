package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.sys.FaultPoints;

/**
 * An attacker against attribution by evidence (GuestFaults, FaultEvidence): one shrink of
 * device A's file is one late fault, delivered once. Its evidence stays visible, though, for as
 * long as A's table is remembered (a quarantined A that is never reset, or a frontend that went:
 * the last 8 tables). Before the fix every later fault on the same OS thread, whatever its
 * cause, was "attributed" to that stale evidence: nothing was quarantined, the queue where it
 * landed was spared and popped its chain again. A queue whose OWN memory faults without
 * evidence (hugetlbfs out of pages, a full tmpfs under a sparse file: its file keeps its size)
 * then faulted, was spared and popped again for ever (a busy loop on a chain that never pops,
 * one fault report per round into the daemon's log), or, landing outside the pop loop, kept
 * being trusted. Evidence now attributes once: a second fault with only spent evidence is
 * handled as a fault without evidence (quarantined where it landed). Deterministic through
 * {@link FaultPoints}, with A's memfd really truncated, as in LateFaultAttributionTest.
 */
class SpentEvidenceAttackTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.POP, FaultPoints.SUBMIT_RETURNED})
    void aSecondFaultWithOnlySpentEvidenceQuarantinesWhereItLands(int point) throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("spent", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            assertEquals(S_OK, a.roundTrip(T_IN));
            assertEquals(S_OK, b.roundTrip(T_IN));
            a.shrink();
            // A's one late fault lands in B: attributed to A, B spared (LateFaultAttributionTest).
            FaultPoints.arm(point);
            assertEquals(S_OK, b.roundTrip(T_OUT));
            assertTrue(FaultPoints.fired());
            assertTrue(a.device.isBroken(0));
            assertFalse(b.device.isBroken(0), b.broken.toString());
            // Now B's own memory faults (no evidence of its own); A's evidence is still there,
            // but spent: B must be quarantined, not spared again.
            FaultPoints.arm(point);
            b.add(T_IN);
            b.publishAndKick();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!FaultPoints.fired() || (!b.device.isBroken(0) && b.q.reap() < 0)) {
                assertTrue(System.nanoTime() < deadline, "the second fault never fired");
                Thread.sleep(1);
            }
            assertTrue(b.device.isBroken(0), "B's second fault had only spent evidence, yet B was spared: " + b.reports);
            assertTrue(b.reports.size() <= 2, "one report per fault: " + b.reports);
            b.stop();
        }
    }

    /**
     * The other side of spending evidence: attacker A, quarantined for its shrink, is reset and
     * started again on the same (still short) table, and faults again; that fault lands in
     * victim B. A queue started on the table made its evidence fresh: A is quarantined again and
     * B is spared, as the first time. (Were the spent mark sticky, a reset attacker could get
     * its victim quarantined with every later fault.)
     */
    @org.junit.jupiter.api.Test
    void anAttackerStartedAgainOnItsShortTableIsBlamedAgainAndItsVictimSpared() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("fresh", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            assertEquals(S_OK, b.roundTrip(T_IN));
            a.shrink();
            for (int round = 0; round < 3; round++) {
                FaultPoints.arm(FaultPoints.POP);
                assertEquals(S_OK, b.roundTrip(T_OUT));
                assertTrue(FaultPoints.fired());
                assertTrue(a.device.isBroken(0), "round " + round + ": A blamed");
                assertFalse(b.device.isBroken(0), "round " + round + ": B spared: " + b.reports);
                a.stop();
                a.device.clearQuarantine(0);
                a.device.startQueue(0); // same table, file still short
            }
        }
    }
}
