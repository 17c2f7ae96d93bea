package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;

/**
 * Online resize over vhost-user: the frontend that gave a backend channel (protocol feature
 * BACKEND_REQ, SET_BACKEND_REQ_FD) receives BACKEND_CONFIG_CHANGE_MSG, GET_CONFIG then shows the
 * new capacity, and sectors beyond the old end are served.
 */
class OnlineResizeTest {
    private static final long PF_BACKEND_REQ = 1L << 5;
    private static final int SET_BACKEND_REQ_FD = 21;

    @TempDir
    Path dir;

    private static long capacity(byte[] config) {
        return java.nio.ByteBuffer.wrap(config).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
    }

    @Test
    void growNotifiesTheFrontendAndServesTheNewSectors() throws Exception {
        Path pairPath = dir.resolve("pair.sock");
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1);
             UnixSocket listener = UnixSocket.listen(pairPath, 1);
             UnixSocket frontendEnd = UnixSocket.connect(pairPath);
             UnixSocket backendEnd = listener.accept()) {
            BlkQueue q = g.queue(0, 128, true);
            byte[] config = qemu.init(VhostUserProtocolTest.ALL_PROTOCOL | PF_BACKEND_REQ, q);
            assertTrue((qemu.protocol & PF_BACKEND_REQ) != 0, "BACKEND_REQ offered");
            assertEquals(0, qemu.f.acked(SET_BACKEND_REQ_FD, null, backendEnd.fd()));
            assertEquals(ServerRig.IMAGE_BYTES / 512, capacity(config));
            qemu.start(qemu.linuxFeatures(), true, null, q);

            long grown = 2 * ServerRig.IMAGE_BYTES;
            rig.image.resize(grown);
            assertTrue(rig.server.resize(grown), "the frontend was told");
            assertEquals(grown, Files.size(dir.resolve("disk.img")));

            NativeBuffer header = new NativeBuffer(64);
            long n = frontendEnd.receive(header.address(), 64, new int[UnixSocket.MAX_FDS], new int[1]);
            assertEquals(12, n, "one header, no payload");
            assertEquals(2, header.buffer().getInt(0), "BACKEND_CONFIG_CHANGE_MSG");
            assertEquals(1, header.buffer().getInt(4), "version 1, no reply asked");
            assertEquals(0, header.buffer().getInt(8));

            assertEquals(grown / 512, capacity(qemu.f.getConfig(0, 57)), "GET_CONFIG shows the new capacity");
            long beyond = ServerRig.IMAGE_BYTES / 512 + 8;
            byte[] data = BlkQueue.pattern(beyond, 4096, 3);
            q.write(beyond, data);
            assertArrayEquals(data, q.read(beyond, 4096));
            qemu.stop(q);
        }
    }

    /**
     * A frontend that never reads its backend channel: once the channel is full, a resize is
     * not told (after {@link BackendChannel#SEND_WAIT_MS}) instead of blocking the caller (an RPC
     * handler holding the daemon's lock) for ever; the session itself goes on serving.
     */
    @Test
    void aFrontendThatReadsNoBackendRequestsNeverBlocksAResize() throws Exception {
        Path pairPath = dir.resolve("pair.sock");
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1);
             UnixSocket listener = UnixSocket.listen(pairPath, 1);
             UnixSocket frontendEnd = UnixSocket.connect(pairPath);
             UnixSocket backendEnd = listener.accept()) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(VhostUserProtocolTest.ALL_PROTOCOL | PF_BACKEND_REQ, q);
            assertEquals(0, qemu.f.acked(SET_BACKEND_REQ_FD, null, backendEnd.fd()));
            // The bound is a failure guard for a caller blocked for ever, not a speed measurement.
            int told = assertTimeoutPreemptively(Duration.ofSeconds(60), () -> {
                for (int i = 0; i < 100_000; i++) {
                    if (!rig.server.resize(ServerRig.IMAGE_BYTES - 512L * (i % 2))) {
                        return i;
                    }
                }
                return -1;
            });
            boolean refused = told >= 0;
            assertTrue(refused, "a full channel ends in a resize that is not told, not a blocked caller");
            assertTrue(told > 0, "the first ones were told");
            assertEquals(ServerRig.IMAGE_BYTES / 512 - (told % 2), capacity(qemu.f.getConfig(0, 57)),
                    "the session still answers, with the last capacity");
            assertTrue(frontendEnd.fd() >= 0);
        }
    }

    @Test
    void aFrontendWithoutBackendChannelIsNotToldButSeesTheSize() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
            rig.image.resize(3 * ServerRig.IMAGE_BYTES);
            assertFalse(rig.server.resize(3 * ServerRig.IMAGE_BYTES));
            assertEquals(3 * ServerRig.IMAGE_BYTES / 512, capacity(qemu.f.getConfig(0, 57)));
            // SET_BACKEND_REQ_FD without BACKEND_REQ negotiated is refused, and the connection goes on.
            try (UnixSocket l = UnixSocket.listen(dir.resolve("p2.sock"), 1); UnixSocket c = UnixSocket.connect(dir.resolve("p2.sock"))) {
                assertEquals(1, qemu.f.acked(SET_BACKEND_REQ_FD, null, c.fd()));
                assertTrue(l.fd() >= 0);
            }
            assertEquals(3 * ServerRig.IMAGE_BYTES / 512, capacity(qemu.f.getConfig(0, 57)));
        }
    }
}
