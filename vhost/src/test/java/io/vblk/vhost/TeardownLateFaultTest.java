package io.vblk.vhost;

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

/**
 * A late guest-memory fault landing in the teardown (HostileFrontendPropertyTest in CI: rings in
 * a memfd the frontend truncated while they ran; Java 17 delivers the SIGBUS as an InternalError
 * at a later safepoint of the I/O thread, there in one of the teardown's device commands). The
 * teardown failed at that step ("teardown failed") and skipped the rest: the device's memory
 * table, the kicks and calls, the unmapping. Deterministic: the JVM's error is thrown through
 * {@link FaultPoints#COMMAND} in the first one-shot command the teardown sends.
 */
class TeardownLateFaultTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    /**
     * Found by HostileFrontendPropertyTest (a ring memfd truncated to 0 while set up): the late
     * fault landed in the start command after it had marked the queue running. SET_VRING_ENABLE
     * was refused, but the device's queue ran on, and the next GET_VRING_BASE ended the
     * connection with an internal error ("queue 0 must be stopped to lift its quarantine").
     */
    @Test
    void aLateFaultInAStartLeavesTheQueueStoppedAsRefused() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q = guest.queue(0, 64, true, 1);
            try (QemuFlow flow = new QemuFlow(rig.connect(), guest, 1)) {
                flow.f.ackEverything(true);
                flow.init(QemuFlow.ALL_PROTOCOL, q);
                FaultPoints.arm(FaultPoints.STARTED);
                try {
                    flow.start(flow.linuxFeatures(), true, null, q);
                } catch (IllegalStateException refused) {
                    // SET_VRING_ENABLE refused: the start failed
                }
                assertTrue(FaultPoints.fired(), "the error was thrown in the start command");
                flow.stop(q); // GET_VRING_BASE: answered, the connection goes on
                q.driver.initialise();
                flow.start(flow.linuxFeatures(), false, null, q);
                q.write(8, BlkQueue.pattern(8, 4096, 1));
                flow.stop(q);
            }
            rig.awaitGone(1);
            assertTrue(rig.lines().stream().noneMatch(l -> l.contains("internal error") || l.contains("connection closed")),
                    String.join("\n", rig.lines()));
        }
    }

    @Test
    void aLateFaultInATeardownCommandStillEndsTheSessionCleanly() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            BlkQueue q1 = guest.queue(0, 64, true, 1);
            try (QemuFlow first = new QemuFlow(rig.connect(), guest, 1)) {
                first.init(QemuFlow.ALL_PROTOCOL, q1);
                first.start(first.linuxFeatures(), true, null, q1);
                q1.write(8, BlkQueue.pattern(8, 4096, 1));
                FaultPoints.arm(FaultPoints.COMMAND);
            } // hangs up with the ring running: the server tears the session down
            rig.awaitGone(1);
            assertTrue(FaultPoints.fired(), "the error was thrown in a teardown command");
            String end = rig.lines().stream().filter(l -> l.startsWith("frontend 1 disconnected")).findFirst().orElseThrow();
            assertEquals("frontend 1 disconnected after", end.substring(0, end.lastIndexOf(' ', end.lastIndexOf(' ') - 1)),
                    "the teardown completed: " + end);
            // Handed to the fault model and run again, by the engine's command (BlockDevice.run)
            // or, past its retries, by the teardown's step.
            assertTrue(rig.lines().stream().anyMatch(l -> l.contains("guest memory fault on I/O thread")
                    || l.contains("a late guest memory fault landed while")), "retried");

            BlkQueue q2 = guest.queue(0, 64, true, 2);
            try (QemuFlow next = new QemuFlow(rig.connect(), guest, 1)) {
                next.init(QemuFlow.ALL_PROTOCOL, q2);
                next.start(next.linuxFeatures(), true, null, q2);
                q2.write(16, BlkQueue.pattern(16, 4096, 2));
                next.stop(q2);
            }
            rig.awaitGone(2);
            assertTrue(rig.lines().stream().noneMatch(l -> l.contains("teardown failed")), String.join("\n", rig.lines()));
        }
    }
}
