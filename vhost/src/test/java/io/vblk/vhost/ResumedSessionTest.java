package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * rev17a HIGH 1: QEMU 7.2 reconnecting to a restarted backend while its device is stopped (a
 * {@code -S} guest, a migration's destination before the switch-over) skips its whole
 * initialisation: the new connection's first message is SET_FEATURES, then GET_INFLIGHT_FD, with
 * no GET_FEATURES, SET_PROTOCOL_FEATURES or SET_OWNER (strace of QEMU 7.2 in rev17a's
 * kill-dst-backend migration). The backend must take it as a resumed session, as
 * libvhost-user does, and serve the guest; a session that negotiated stays held to what it
 * negotiated.
 */
class ResumedSessionTest {
    /** What QEMU 7.2 acked of vblk's offer (0xb22b in the strace). */
    static final long QEMU_PROTOCOL = QemuFlow.ALL_PROTOCOL | VhostUserFrontend.PF_INFLIGHT_SHMFD | (1L << 1) | (1L << 5)
            | (1L << 13);

    @TempDir
    Path dir;

    @Test
    void aSessionResumedWithoutSetOwnerServesVerifiedIo() throws Exception {
        try (TestGuest g = new TestGuest(); BlkQueue q = g.queue(0, 64, true)) {
            long offered;
            long protocol;
            try (ServerRig a = ServerRig.start(dir, 1); QemuFlow first = new QemuFlow(a.connect(), g, 1)) {
                first.init(QEMU_PROTOCOL, q); // realize; the device is never started (-S)
                offered = first.offered;
                protocol = first.protocol;
                assertEquals(QEMU_PROTOCOL, protocol);
            } // the backend dies (kill -9) and is restarted on the same socket and image
            try (ServerRig b = ServerRig.start(dir, 1); QemuFlow resumed = new QemuFlow(b.connect(), g, 1)) {
                // QEMU keeps what it negotiated with the previous process and sends only the start.
                resumed.offered = offered;
                resumed.protocol = protocol;
                resumed.start(resumed.linuxFeatures(), true, null, q);
                byte[] data = BlkQueue.pattern(64, 4096, 17);
                q.write(64, data);
                assertArrayEquals(data, q.read(64, 4096));
                q.flush();
                assertEquals(3, resumed.stop(q)[0], "a write, a read and a flush");
                assertTrue(b.complaints(1).isEmpty(), b.complaints(1).toString());
                String line = b.awaitLine(l -> l.contains("resumed session"));
                assertTrue(line.contains("SET_FEATURES") && line.contains("QEMU"), line);
                assertEquals(1, b.lines().stream().filter(l -> l.contains("resumed session")).count(), "one line");
            }
        }
    }

    /** A first message invalid in itself is refused though it resumes the session. */
    @Test
    void aResumingMessageInvalidInItselfIsStillRefused() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); VhostUserFrontend f = rig.connect()) {
            assertNotEquals(0, f.acked(VhostUserFrontend.SET_FEATURES, VhostUserFrontend.u64(1L << 63)),
                    "SET_FEATURES of a bit never offered");
        }
    }

    /** Only a session that starts with a device-start message resumes: one that began otherwise needs SET_OWNER. */
    @Test
    void aSessionThatBeganWithNegotiationStillNeedsSetOwner() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); VhostUserFrontend f = rig.connect()) {
            f.setProtocolFeatures(QEMU_PROTOCOL);
            assertNotEquals(0, f.acked(VhostUserFrontend.SET_FEATURES, VhostUserFrontend.u64(0)), "SET_FEATURES before SET_OWNER");
            rig.awaitLine(l -> l.contains("SET_FEATURES before SET_OWNER"));
        }
    }
}
