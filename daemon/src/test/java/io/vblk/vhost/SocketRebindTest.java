package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * A live export whose socket file (or its directory) was removed listens again at the same
 * path on export.rebind: the frontend attached meanwhile is served on, untouched, and a new
 * frontend connects to the new socket once that one has gone. Until then the export said
 * socket_missing (RemovedSocketFileTest); a rebind that cannot listen (the directory still
 * gone) says why and changes nothing; a rebind of a socket in place does nothing.
 */
class SocketRebindTest {
    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("unchecked")
    void aRemovedSocketIsBoundAgainAndANewFrontendConnects() throws Exception {
        Path sub = Files.createDirectory(dir.resolve("sub"));
        Path sock = sub.resolve("a.sock");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", DaemonRig.json(Map.of("id", "a", "image", DaemonRig.image(dir, "a.img").toString(),
                    "socket", sock.toString())));
            byte[] data = BlkQueue.pattern(8, 4096, 5);
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                q.write(8, data);

                Files.delete(sock);
                assertEquals(true, listed(d).get("socket_missing"));
                assertEquals(Map.of("id", "a", "rebound", true), d.result("export.rebind", "{\"id\":\"a\"}"));
                assertTrue(SocketFile.isSocket(sock), "a socket file at the path again");
                assertEquals(false, listed(d).get("socket_missing"));
                assertEquals(Map.of("id", "a", "rebound", false), d.result("export.rebind", "{\"id\":\"a\"}"),
                        "nothing to do while the file is in place");
                assertArrayEquals(data, q.read(8, 4096), "the attached frontend is served on");
                assertEquals(ProcessHandle.current().pid(), ((Number) ((Map<String, Object>) listed(d).get("frontend")).get("pid"))
                        .longValue(), "still attached");
            }
            // The attached one has gone: a new frontend connects by name, to the new socket.
            try (TestGuest g = new TestGuest()) {
                QemuFlow.goodFrontendRoundTrip(VhostUserFrontend.connect(sock), g, g.queue(0, 128, true), 1);
            }

            // Its directory removed too: no rebind until it is back, and the export stays as it was.
            Files.delete(sock);
            Files.delete(sub);
            Map<String, Object> refused = DaemonRig.error(d.call("export.rebind", "{\"id\":\"a\"}"));
            assertEquals(-32005, ((Number) refused.get("code")).longValue(), refused.toString());
            assertTrue(((String) refused.get("message")).contains("cannot listen again on " + sock), refused.toString());
            assertEquals(true, listed(d).get("socket_missing"));
            Files.createDirectory(sub);
            assertEquals(Map.of("id", "a", "rebound", true), d.result("export.rebind", "{\"id\":\"a\"}"));
            try (TestGuest g = new TestGuest()) {
                QemuFlow.goodFrontendRoundTrip(VhostUserFrontend.connect(sock), g, g.queue(0, 128, true), 2);
            }
            assertTrue(d.stderr().contains("export a: listening again on " + sock), d.stderr());
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> listed(DaemonRig d) throws Exception {
        return ((List<Map<String, Object>>) d.result("export.list", null)).get(0);
    }
}
