package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.FaultPoints;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * A late guest-memory fault landing in a device control command other than the teardown's (a
 * frontend truncated its memfd; Java 17 delivers the SIGBUS as an InternalError at a later
 * safepoint of the I/O thread, possibly in a command that touches no guest memory). The command
 * failed, vhost answered "internal error" and closed the connection (and when the fault was
 * another frontend's, the next one's on the same thread). Now engine BlockDevice hands the fault
 * to the fault model and runs the command again, so each request completes as it would have.
 * Deterministic: the JVM's error is thrown through {@link FaultPoints#COMMAND} in the first
 * one-shot command the request sends (the seam TeardownLateFaultTest uses); one test per command.
 * Each ends with a good frontend on the same server (nothing leaked onto it).
 */
class CommandLateFaultTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    /** GET_VRING_BASE: the fault lands in lifting the ring's quarantine after the stop; still answered. */
    @Test
    void getVringBaseAnswersWhenALateFaultLandsInItsCommand() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            try (QemuFlow flow = new QemuFlow(rig.connect(), guest, 1)) {
                flow.f.ackEverything(true);
                flow.init(QemuFlow.ALL_PROTOCOL, q);
                flow.start(flow.linuxFeatures(), true, null, q);
                q.write(8, BlkQueue.pattern(8, 4096, 1));
                flow.f.setVringEnable(0, false);
                FaultPoints.arm(FaultPoints.COMMAND);
                assertEquals(1, flow.f.getVringBase(0), "answered with where the ring stopped");
                assertTrue(FaultPoints.fired(), "the error was thrown in a command of GET_VRING_BASE");
                restartAndWrite(flow, q, 16);
            }
            rig.awaitGone(1);
            assertClean(rig, 1);
            goodFrontend(rig, guest, 2);
        }
    }

    /** SET_MEM_TABLE with the ring running: the fault lands in a command resuming the ring on the new table. */
    @Test
    void aMemoryTableChangeLandsWhenALateFaultLandsInItsCommand() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            try (QemuFlow flow = new QemuFlow(rig.connect(), guest, 1)) {
                flow.f.ackEverything(true);
                flow.init(QemuFlow.ALL_PROTOCOL & ~VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS, q); // SET_MEM_TABLE
                flow.start(flow.linuxFeatures(), true, null, q);
                q.write(8, BlkQueue.pattern(8, 4096, 1));
                FaultPoints.arm(FaultPoints.COMMAND);
                flow.sendMemory(guest.regions()); // acknowledged (REPLY_ACK), or this throws
                assertTrue(FaultPoints.fired(), "the error was thrown in a command of the memory-table change");
                byte[] data = BlkQueue.pattern(16, 4096, 2);
                q.write(16, data); // the ring resumed on the new table
                assertArrayEquals(data, q.read(16, 4096));
                assertEquals(3, flow.stop(q)[0]);
            }
            rig.awaitGone(1);
            assertClean(rig, 1);
            goodFrontend(rig, guest, 2);
        }
    }

    /** RESET_OWNER: the fault lands in the reset of a ring after the rings stopped; the reset completes. */
    @Test
    void aResetCompletesWhenALateFaultLandsInItsCommand() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            try (QemuFlow flow = new QemuFlow(rig.connect(), guest, 1)) {
                flow.f.ackEverything(true);
                flow.init(QemuFlow.ALL_PROTOCOL, q);
                flow.start(flow.linuxFeatures(), true, null, q);
                q.write(8, BlkQueue.pattern(8, 4096, 1));
                FaultPoints.arm(FaultPoints.COMMAND);
                flow.f.request(VhostUserFrontend.RESET_OWNER); // acknowledged, or this throws
                assertTrue(FaultPoints.fired(), "the error was thrown in a command of the reset");
                // The device starts over (memory and ownership stay): features and rings set up
                // again, at avail index 0 of a fresh ring.
                q.driver.initialise();
                flow.start(flow.linuxFeatures(), false, null, q);
                q.write(16, BlkQueue.pattern(16, 4096, 2));
                assertEquals(1, flow.stop(q)[0]);
            }
            rig.awaitGone(1);
            assertClean(rig, 1);
            goodFrontend(rig, guest, 2);
        }
    }

    /**
     * SET_VRING_KICK with the ring running: the fault lands in the kick change, which lands. No
     * file shrank (an injected fault), so the fault model quarantines the running ring where the
     * fault landed, as the data path does (needs-reset on its error eventfd); the connection goes
     * on, and GET_VRING_BASE lifts the quarantine.
     */
    @Test
    void aKickChangeLandsWhenALateFaultLandsInItsCommand() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            try (QemuFlow flow = new QemuFlow(rig.connect(), guest, 1)) {
                flow.f.ackEverything(true);
                flow.init(QemuFlow.ALL_PROTOCOL, q);
                flow.start(flow.linuxFeatures(), true, null, q);
                q.write(8, BlkQueue.pattern(8, 4096, 1));
                FaultPoints.arm(FaultPoints.COMMAND);
                flow.f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, q.kick); // acknowledged, or this throws
                assertTrue(FaultPoints.fired(), "the error was thrown in the kick change");
                assertEquals(1, flow.errs[0].read(), "quarantined where the fault landed (no evidence): needs-reset");
                assertEquals(1, flow.stop(q)[0]);
                restartAndWrite(flow, q, 16);
            }
            rig.awaitGone(1);
            assertClean(rig, 1);
            goodFrontend(rig, guest, 2);
        }
    }

    /** SET_VRING_ENABLE with inflight tracking: the fault lands in queuing the recovered requests; the ring starts. */
    @Test
    void anInflightStartCompletesWhenALateFaultLandsInItsCommand() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            try (QemuFlow flow = new QemuFlow(rig.connect(), guest, 1)) {
                VhostUserFrontend f = flow.f;
                f.ackEverything(true);
                flow.init(QemuFlow.ALL_PROTOCOL | VhostUserFrontend.PF_INFLIGHT_SHMFD, q);
                long features = flow.linuxFeatures();
                // QemuFlow.start up to the enable, which is where the fault is to land.
                f.setFeatures(features);
                flow.inflight = f.getInflightFd(1, q.driver.size());
                f.setInflightFd(flow.inflight);
                f.setVringFd(VhostUserFrontend.SET_VRING_CALL, 0, q.call);
                flow.sendMemory(guest.regions());
                f.setVringNum(0, q.driver.size());
                f.setVringBase(0, 0);
                f.setVringAddr(0, q.descUser(), q.usedUser(), q.availUser());
                f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, q.kick);
                FaultPoints.arm(FaultPoints.COMMAND);
                f.setVringEnable(0, true); // acknowledged, or this throws
                assertTrue(FaultPoints.fired(), "the error was thrown in a command of the start");
                byte[] data = BlkQueue.pattern(8, 4096, 1);
                q.write(8, data);
                assertArrayEquals(data, q.read(8, 4096));
                assertEquals(2, flow.stop(q)[0]);
            }
            rig.awaitGone(1);
            assertClean(rig, 1);
            goodFrontend(rig, guest, 2);
        }
    }

    /** Re-initialises {@code q} and runs one write through a new start, then stops. */
    private static void restartAndWrite(QemuFlow flow, BlkQueue q, long sector) {
        q.driver.initialise();
        flow.start(flow.linuxFeatures(), false, null, q);
        q.write(sector, BlkQueue.pattern(sector, 4096, 3));
        assertEquals(1, flow.stop(q)[0]);
    }

    /** Frontend {@code id} ended by its own hang-up: no refusal, no connection closed, no failed teardown. */
    private static void assertClean(ServerRig rig, int id) {
        assertTrue(rig.complaints(id).isEmpty(), String.join("\n", rig.lines()));
        assertTrue(rig.lines().stream().noneMatch(l -> l.contains("internal error") || l.contains("teardown failed")),
                String.join("\n", rig.lines()));
    }

    /** A good frontend on the same server, and the same I/O thread, afterwards. */
    private static void goodFrontend(ServerRig rig, TestGuest guest, int id) {
        BlkQueue q = guest.queue(0, 64, true, id);
        QemuFlow.goodFrontendRoundTrip(rig.connect(), guest, q, id);
        rig.awaitGone(id);
        assertTrue(rig.complaints(id).isEmpty(), String.join("\n", rig.lines()));
    }
}
