package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.QemuTools;

/**
 * A network disk's waits for its server are the operator's to set ({@code connect_timeout_ms},
 * {@code request_timeout_ms}, {@code retry_timeout_ms}; {@code vblk serve --connect-timeout-ms}
 * and the like): the handshake gives up at the connect time given and says so, the export lists
 * what it was given, and an image the settings cannot apply to refuses them.
 */
class NetworkTimeoutsTest {
    @TempDir
    Path dir;

    @Test
    void aStalledHandshakeEndsAtTheConnectTimeoutGivenAndNamesIt() throws Exception {
        // A server that accepts and never greets: the handshake waits until the client gives up.
        try (StalledNbdServer server = new StalledNbdServer();
             DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "x",
                    "image", server.address(), "socket", dir.resolve("x.sock").toString(),
                    "connect_timeout_ms", 300))));
            String message = e.get("message").toString();
            assertTrue(message.contains("cannot open") && message.contains("connect timeout 300 ms"), message);
            assertEquals(List.of(), d.result("export.list", null), "nothing left of the failed add");
        }
    }

    @Test
    void aQcow2ImagesNetworkBackingWaitsAsTheExportSays() throws Exception {
        // The backing image's server accepts and never greets: the backing's open ends at the
        // export's connect timeout (it used the 5 s default, and the setting was refused for a
        // file image before).
        try (StalledNbdServer server = new StalledNbdServer();
             DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Path overlay = dir.resolve("o.qcow2");
            QemuTools.Run made = QemuTools.qemuImg("create", "-f", "qcow2", "-u", "-b",
                    server.address(), "-F", "raw", overlay.toString(), "1M");
            assertEquals(0, made.code(), made.output());
            Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "q",
                    "image", overlay.toString(), "format", "qcow2", "network_backing", true,
                    "socket", dir.resolve("q.sock").toString(), "connect_timeout_ms", 300, "retry_timeout_ms", 0))));
            String message = e.get("message").toString();
            assertTrue(message.contains("connect timeout 300 ms"), message);
            assertEquals(List.of(), d.result("export.list", null), "nothing left of the failed add");
            // Without network_backing the image follows no network name: the settings mean nothing there.
            Map<String, Object> refused = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "q",
                    "image", overlay.toString(), "format", "qcow2", "socket", dir.resolve("q.sock").toString(),
                    "connect_timeout_ms", 300))));
            assertTrue(refused.get("message").toString().contains("connect_timeout_ms applies to nbd:// images only"),
                    refused.toString());
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void theTimeoutsGivenAreListed() throws Exception {
        Path sock = dir.resolve("m.nbd");
        Process nbdkit = new ProcessBuilder("nbdkit", "-f", "-U", sock.toString(), "memory", "1M").redirectErrorStream(true)
                .redirectOutput(dir.resolve("nbdkit.out").toFile()).start();
        try {
            DaemonRig.awaitListening(sock, "nbdkit");
            try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
                d.result("export.add", DaemonRig.json(Map.of("id", "m", "image", "nbd+unix:///?socket=" + sock,
                        "socket", dir.resolve("m.sock").toString(), "connect_timeout_ms", 20_000,
                        "request_timeout_ms", 40_000, "retry_timeout_ms", 0)));
                d.result("export.add", DaemonRig.json(Map.of("id", "k", "image", "nbd+unix:///?socket=" + sock,
                        "socket", dir.resolve("k.sock").toString())));
                List<Map<String, Object>> listed = (List<Map<String, Object>>) d.result("export.list", null);
                Map<String, Object> m = listed.stream().filter(x -> x.get("id").equals("m")).findFirst().orElseThrow();
                assertEquals(20_000, ((Number) m.get("connect_timeout_ms")).intValue(), m.toString());
                assertEquals(40_000, ((Number) m.get("request_timeout_ms")).intValue(), m.toString());
                assertEquals(0, ((Number) m.get("retry_timeout_ms")).intValue(), m.toString());
                Map<String, Object> k = listed.stream().filter(x -> x.get("id").equals("k")).findFirst().orElseThrow();
                assertEquals(List.of(5_000, 30_000, 30_000), List.of(((Number) k.get("connect_timeout_ms")).intValue(),
                        ((Number) k.get("request_timeout_ms")).intValue(), ((Number) k.get("retry_timeout_ms")).intValue()),
                        "the defaults: " + k);
            }
        } finally {
            QemuTools.stop(nbdkit);
        }
    }

    @Test
    void settingsThatCannotApplyAreRefused() throws Exception {
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            for (String key : List.of("connect_timeout_ms", "request_timeout_ms")) {
                Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "n",
                        "image", "null:1M", "socket", dir.resolve("n.sock").toString(), key, 1000))));
                assertTrue(e.get("message").toString().contains(key + " applies to nbd:// images only"), e.toString());
            }
            Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "n",
                    "image", "null:1M", "socket", dir.resolve("n.sock").toString(), "retry_timeout_ms", 1000))));
            assertTrue(e.get("message").toString().contains("retry_timeout_ms applies to network images"), e.toString());
            Map<String, Object> range = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "n",
                    "image", "nbd://127.0.0.1:1/x", "socket", dir.resolve("n.sock").toString(), "connect_timeout_ms", 0))));
            assertTrue(range.get("message").toString().contains("connect_timeout_ms"), range.toString());
            assertEquals(List.of(), d.result("export.list", null));
        }
    }
}
