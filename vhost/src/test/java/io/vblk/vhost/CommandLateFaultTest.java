package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.FaultPoints;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
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
            try (QemuFlow flow = running(rig, guest, QemuFlow.ALL_PROTOCOL, q, 8, 1)) {
                flow.f.setVringEnable(0, false);
                FaultPoints.arm(FaultPoints.COMMAND);
                assertEquals(1, flow.f.getVringBase(0), "answered with where the ring stopped");
                assertTrue(FaultPoints.fired(), "the error was thrown in a command of GET_VRING_BASE");
                restartAndWrite(flow, q, 16);
            }
            endsClean(rig, guest);
        }
    }

    /** SET_MEM_TABLE with the ring running: the fault lands in a command resuming the ring on the new table. */
    @Test
    void aMemoryTableChangeLandsWhenALateFaultLandsInItsCommand() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            // SET_MEM_TABLE, not ADD_MEM_REG
            try (QemuFlow flow = running(rig, guest, QemuFlow.ALL_PROTOCOL & ~VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS, q, 8, 1)) {
                FaultPoints.arm(FaultPoints.COMMAND);
                flow.sendMemory(guest.regions()); // acknowledged (REPLY_ACK), or this throws
                assertTrue(FaultPoints.fired(), "the error was thrown in a command of the memory-table change");
                byte[] data = BlkQueue.pattern(16, 4096, 2);
                q.write(16, data); // the ring resumed on the new table
                assertArrayEquals(data, q.read(16, 4096));
                assertEquals(3, flow.stop(q)[0]);
            }
            endsClean(rig, guest);
        }
    }

    /** RESET_OWNER: the fault lands in the reset of a ring after the rings stopped; the reset completes. */
    @Test
    void aResetCompletesWhenALateFaultLandsInItsCommand() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            try (QemuFlow flow = running(rig, guest, QemuFlow.ALL_PROTOCOL, q, 8, 1)) {
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
            endsClean(rig, guest);
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
            try (QemuFlow flow = running(rig, guest, QemuFlow.ALL_PROTOCOL, q, 8, 1)) {
                FaultPoints.arm(FaultPoints.COMMAND);
                flow.f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, q.kick); // acknowledged, or this throws
                assertTrue(FaultPoints.fired(), "the error was thrown in the kick change");
                assertEquals(1, flow.errs[0].read(), "quarantined where the fault landed (no evidence): needs-reset");
                assertEquals(1, flow.stop(q)[0]);
                restartAndWrite(flow, q, 16);
            }
            endsClean(rig, guest);
        }
    }

    /**
     * The fault of a frontend that truncated its memory and went, delivered in the NEXT
     * frontend's kick change with its ring running: attributed by evidence (only the gone
     * frontend's table maps past its file), it quarantines nothing, and the command runs again:
     * the next frontend's ring goes on. Before, that frontend's connection was closed.
     */
    @Test
    void theFaultOfAFrontendThatWentCostsTheNextOneNothing() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            int extra = Memfd.create("extra", EXTRA_BYTES);
            try {
                truncateAndGo(rig, guest, extra);
                BlkQueue q2 = guest.queue(0, 64, true, 2);
                try (QemuFlow next = running(rig, guest, QemuFlow.ALL_PROTOCOL, q2, 16, 2)) {
                    FaultPoints.arm(FaultPoints.COMMAND);
                    next.f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, q2.kick); // acknowledged, or this throws
                    assertTrue(FaultPoints.fired(), "the error was thrown in the next frontend's kick change");
                    byte[] data = BlkQueue.pattern(24, 4096, 3);
                    q2.write(24, data); // not quarantined: kicked through the new descriptor
                    assertArrayEquals(data, q2.read(24, 4096));
                    assertEquals(3, next.stop(q2)[0]);
                    assertTrue(next.errs[0].read() < 0, "the next frontend's ring was never quarantined");
                }
                rig.awaitGone(2);
                String report = rig.awaitLine(l -> l.contains("attributed by evidence"));
                assertTrue(report.contains("nothing quarantined"), report);
                assertClean(rig, 2);
            } finally {
                Native.libc().close(extra);
            }
        }
    }

    /**
     * As above, delivered in the next frontend's start just after it marked the queue running
     * (sys FaultPoints.STARTED): spared by the evidence, the start runs again and completes,
     * kick watched, where it was refused before (TeardownLateFaultTest has the case without
     * evidence: refused, and stopped again).
     */
    @Test
    void theFaultOfAFrontendThatWentDoesNotRefuseTheNextOnesStart() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            int extra = Memfd.create("extra", EXTRA_BYTES);
            try {
                truncateAndGo(rig, guest, extra);
                BlkQueue q2 = guest.queue(0, 64, true, 2);
                try (QemuFlow next = new QemuFlow(rig.connect(), guest, 1)) {
                    next.f.ackEverything(true);
                    next.init(QemuFlow.ALL_PROTOCOL, q2);
                    FaultPoints.arm(FaultPoints.STARTED);
                    next.start(next.linuxFeatures(), true, null, q2); // SET_VRING_ENABLE acknowledged, or this throws
                    assertTrue(FaultPoints.fired(), "the error was thrown in the next frontend's start");
                    for (int i = 0; i < 3; i++) {
                        // Long enough for the I/O thread to stop polling and sleep on the kicks
                        // it watches: only a watched kick then wakes it (no timing is asserted).
                        Thread.sleep(1000);
                        byte[] data = BlkQueue.pattern(16 + 8 * i, 4096, 2 + i);
                        q2.write(16 + 8 * i, data); // each kicked: the kick is watched
                        assertArrayEquals(data, q2.read(16 + 8 * i, 4096));
                    }
                    assertEquals(6, next.stop(q2)[0]);
                    assertTrue(next.errs[0].read() < 0, "the next frontend's ring was never quarantined");
                }
                rig.awaitGone(2);
                assertClean(rig, 2);
            } finally {
                Native.libc().close(extra);
            }
        }
    }

    private static final long EXTRA_GPA = 8L << 30;
    private static final long EXTRA_BYTES = 1L << 20;

    /**
     * Frontend 1 runs a ring, adds a data-only region of {@code extra} that the guest never
     * uses, cuts the file from under the mapping, stops and hangs up (LateFaultNextFrontendTest).
     */
    private static void truncateAndGo(ServerRig rig, TestGuest guest, int extra) {
        BlkQueue q1 = guest.queue(0, 64, true, 1);
        try (QemuFlow first = new QemuFlow(rig.connect(), guest, 1)) {
            first.init(QemuFlow.ALL_PROTOCOL, q1);
            first.start(first.linuxFeatures(), true, null, q1);
            VhostUserFrontend.Region r = new VhostUserFrontend.Region(EXTRA_GPA, EXTRA_BYTES, 0x7100_0000_0000L, 0);
            assertEquals(0, first.f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), extra));
            q1.write(8, BlkQueue.pattern(8, 4096, 1));
            assertEquals(0, Native.libc().ftruncate(extra, 0));
            first.stop(q1);
        }
        rig.awaitGone(1);
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
            endsClean(rig, guest);
        }
    }

    /**
     * A frontend on {@code rig} with {@code protocol}, every request acknowledged (REPLY_ACK), its
     * ring {@code q} started and one write of pattern {@code seed} served at {@code sector}.
     */
    private static QemuFlow running(ServerRig rig, TestGuest guest, long protocol, BlkQueue q, long sector, int seed) {
        QemuFlow flow = new QemuFlow(rig.connect(), guest, 1);
        try {
            flow.f.ackEverything(true);
            flow.init(protocol, q);
            flow.start(flow.linuxFeatures(), true, null, q);
            q.write(sector, BlkQueue.pattern(sector, 4096, seed));
            return flow;
        } catch (RuntimeException | Error e) {
            flow.close(); // as the try-with-resources it replaces would have
            throw e;
        }
    }

    /** Frontend 1 has gone cleanly, and a good frontend 2 is served afterwards on the same server. */
    private static void endsClean(ServerRig rig, TestGuest guest) {
        rig.awaitGone(1);
        assertClean(rig, 1);
        goodFrontend(rig, guest, 2);
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
