package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Review rev17c: a device serves one frontend at a time, so a process of an allowed uid that
 * connects and never sends a message held the export's only slot for ever while a real frontend
 * waited (only a forced removal freed it). A served frontend that has sent no message when its
 * bound ({@link VhostUserServer#SILENT_FRONTEND_MS}) is up while another waits is closed and the
 * waiting one served; one that has sent any message is never closed for it. The bound is 0 here,
 * so the check is due as soon as a frontend waits, and {@link VhostUserServer#awaitSilenceChecks}
 * tells when it has run: no timing.
 */
class SilentFrontendTest {
    @TempDir
    Path dir;

    @Test
    void aSilentFrontendGivesWayToOneThatWaits() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            rig.server.silentFrontendMs = 0;
            try (VhostUserFrontend silent = rig.connect()) {
                rig.awaitLine(l -> l.startsWith("frontend 1 connected"));
                BlkQueue q = guest.queue(0, 64, true, 2);
                // Served only once the silent one is closed: before the fix its first request waited for ever.
                QemuFlow.goodFrontendRoundTrip(rig.connect(), guest, q, 2);
                String why = rig.awaitLine(l -> l.startsWith("frontend 1 (pid ") && l.contains(" sent no message in 0 ms"));
                assertTrue(why.contains("closing it to serve the waiting one"), why);
                String end = rig.awaitLine(l -> l.startsWith("frontend 1 disconnected"));
                assertTrue(end.contains("it had sent no message while another frontend waited"), end);
                assertTrue(silent.closedByBackend(), "the silent connection is closed");
            }
        }
    }

    @Test
    void aFrontendThatSpokeOnceIsNeverClosedForSilence() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1)) {
            rig.server.silentFrontendMs = 0;
            try (VhostUserFrontend paused = rig.connect()) {
                assertTrue(paused.getFeatures() != 0); // then quiet, as a QEMU paused after set-up
                VhostUserFrontend waiting = rig.connect();
                try {
                    rig.awaitLine(l -> l.startsWith("a frontend (pid ") && l.contains(" waits: frontend 1 "));
                    VhostUserServer.awaitSilenceChecks();
                    assertTrue(paused.getFeatures() != 0, "still served after the check");
                    assertTrue(rig.lines().stream().noneMatch(l -> l.contains("sent no message")), String.join("\n", rig.lines()));
                } finally {
                    waiting.close();
                }
            }
        }
    }
}
