package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.VhostUserFrontend;
import io.vblk.vhost.Log;

/**
 * export.remove without force looks for an attached frontend, then closes the export: a frontend
 * that connected between the look and the close was cut off without force. The look and the
 * stop that refuses new frontends are now one step under the server's listener lock: a frontend
 * served by then makes the removal refused (IN_USE), as if it had been there at the look, and
 * it is served on. Made deterministic by the daemon's package-private hook that runs between
 * the look and the stop: it connects a frontend and waits until it is served.
 */
class RemoveAttachRaceTest {
    @TempDir
    Path dir;

    @Test
    void aFrontendThatCameAfterTheLookIsNotCutOff() throws Exception {
        Path sock = dir.resolve("a.sock");
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            d.call("export.add", Params.json(Map.of("id", "a", "image", "null:1M", "socket", sock.toString())));
            VhostUserFrontend[] late = new VhostUserFrontend[1];
            d.afterAttachedCheck = () -> {
                late[0] = VhostUserFrontend.connect(sock);
                assertTrue(late[0].getFeatures() != 0, "served"); // answered: it is the export's frontend now
            };
            try {
                RpcError e = assertThrows(RpcError.class, () -> d.call("export.remove", Params.json(Map.of("id", "a"))));
                assertEquals(RpcError.IN_USE, e.code, e.getMessage());
                d.afterAttachedCheck = () -> { };
                assertTrue(late[0].getFeatures() != 0, "still served");
                assertEquals(1, ((List<?>) d.call("export.list", Params.json(null))).size());
            } finally {
                if (late[0] != null) {
                    late[0].close();
                }
            }
        }
    }
}
