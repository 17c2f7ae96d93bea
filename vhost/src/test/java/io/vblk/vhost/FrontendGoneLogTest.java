package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.VhostUserFrontend;

/**
 * What the log says when a frontend leaves during set-up. QEMU's vhost-user-blk with
 * num-queues above the device's count reads GET_QUEUE_NUM and disconnects, saying why only on
 * its own stderr ("The maximum number of queues supported by the backend is 1"); the backend's
 * line names the last request and the likely reason, so the operator of the backend sees it too.
 * A second frontend on a socket already serving one is logged at once (it used to wait silently
 * in the listen backlog) and served when the first goes.
 */
class FrontendGoneLogTest {
    @TempDir
    Path dir;

    @Test
    void aFrontendThatLeavesAfterGetQueueNumIsToldAboutQueues() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1)) {
            try (VhostUserFrontend f = rig.connect()) {
                f.getFeatures();
                long protocol = f.getProtocolFeatures();
                f.setProtocolFeatures(protocol & ProtocolFeatures.bit(ProtocolFeatures.MQ));
                assertEquals(1, f.getU64(VhostUserFrontend.GET_QUEUE_NUM));
            } // QEMU wanted num-queues=4: it gives up here
            String line = rig.awaitLine(l -> l.startsWith("frontend 1 disconnected"));
            assertTrue(line.contains("the last GET_QUEUE_NUM, before starting a ring"), line);
            assertTrue(line.contains("the device has 1 queue: a frontend that asks for more gives up here"), line);
        }
    }

    /**
     * Review rev17c: a frontend idle after GET_QUEUE_NUM when the export stops (a shutdown) was
     * logged with the hint for a frontend that gave up for the queue count; the server closed it.
     */
    @Test
    void aFrontendClosedByTheStopGetsNoQueueHint() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1)) {
            try (VhostUserFrontend f = rig.connect()) {
                f.getFeatures();
                long protocol = f.getProtocolFeatures();
                f.setProtocolFeatures(protocol & ProtocolFeatures.bit(ProtocolFeatures.MQ));
                assertEquals(1, f.getU64(VhostUserFrontend.GET_QUEUE_NUM));
                rig.server.stop();
                String line = rig.awaitLine(l -> l.startsWith("frontend 1 disconnected"));
                assertTrue(line.contains("the export stops"), line);
                assertTrue(!line.contains("gives up here"), line);
            }
        }
    }

    @Test
    void aSecondFrontendIsLoggedAsWaitingAndServedWhenTheFirstGoes() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1)) {
            long pid = ProcessHandle.current().pid();
            VhostUserFrontend first = rig.connect();
            try (VhostUserFrontend second = rig.connect()) {
                try {
                    first.getFeatures();
                    String line = rig.awaitLine(l -> l.startsWith("a frontend (pid " + pid));
                    assertTrue(line.contains(" waits: frontend 1 (pid " + pid + ", uid "), line);
                } finally {
                    first.close();
                }
                assertTrue(second.getFeatures() != 0, "served once the first has gone");
                rig.awaitLine(l -> l.startsWith("frontend 2 connected"));
            }
        }
    }
}
