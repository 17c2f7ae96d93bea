package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * The serve path registers the frontend's guest memory (two regions of one memfd, as QEMU's
 * memory-backend-memfd sends them) with io_uring as fixed buffers, logs it with the memory
 * table, serves I/O right through them, and drops the registration when the frontend goes.
 */
class FixedBuffersServeTest {
    @TempDir
    Path dir;

    @Test
    void aMemfdTableIsRegisteredWhileTheFrontendIsConnected() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest()) {
            try (QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserFrontend.PF_CONFIG, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                String line = rig.awaitLine(l -> l.contains("memory table") && l.contains("fixed buffers"));
                assertTrue(line.contains("fixed buffers: I/O thread 0: registered 2 buffer(s), " + 2 * TestGuest.REGION_BYTES
                        + " bytes"), line);
                for (int i = 0; i < 16; i++) {
                    byte[] data = BlkQueue.pattern(8 * i, 4096 * (1 + i % 4), i);
                    q.write(8L * i, data);
                    assertArrayEquals(data, q.read(8L * i, data.length), "round " + i);
                }
            }
            rig.awaitGone(1);
            assertEquals("I/O thread 0: none (no guest memory)", rig.server.device().fixedBuffers());
        }
    }
}
