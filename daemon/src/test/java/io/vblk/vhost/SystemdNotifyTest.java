package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code vblk daemon} under systemd's {@code Type=notify}: with NOTIFY_SOCKET set (a path, or an
 * abstract '@' name) it sends READY=1 with a STATUS once every export of its configuration has
 * been tried, and STOPPING=1 when the shutdown begins (SIGTERM, as systemctl stop sends).
 */
class SystemdNotifyTest {
    @TempDir
    Path dir;

    @Test
    void readyAfterTheStartAndStoppingAtShutdownOnAPathSocket() throws Exception {
        Path notify = dir.resolve("notify.sock");
        try (NotifyListener systemd = new NotifyListener(notify.toString())) {
            runDaemon(notify.toString(), systemd);
        }
    }

    @Test
    void abstractNotifySocket() throws Exception {
        String name = "@vblk-test-notify-" + ProcessHandle.current().pid() + "-" + System.nanoTime();
        try (NotifyListener systemd = new NotifyListener(name)) {
            runDaemon(name, systemd);
        }
    }

    @Test
    void serveIsReadyOnceItsExportListens() throws Exception {
        Path notify = dir.resolve("notify.sock");
        Path sock = dir.resolve("s.sock");
        try (NotifyListener systemd = new NotifyListener(notify.toString())) {
            ProcessBuilder pb = new ProcessBuilder(ServeProcess.command(List.of(), "serve", "--image", "null:1M",
                    "--socket", sock.toString()))
                    .redirectOutput(dir.resolve("out.txt").toFile()).redirectError(dir.resolve("err.txt").toFile());
            pb.environment().put("NOTIFY_SOCKET", notify.toString());
            Process p = pb.start();
            try {
                String ready = systemd.until("READY=1", 60);
                assertNotNull(ready, "READY=1 once serving: " + Files.readString(dir.resolve("err.txt")));
                assertTrue(Files.exists(sock), "the export listens when ready");
                p.destroy();
                assertNotNull(systemd.until("STOPPING=1", 60), "STOPPING=1 at shutdown");
                assertTrue(p.waitFor(60, TimeUnit.SECONDS), "exited after SIGTERM");
                assertEquals(0, p.exitValue());
            } finally {
                p.destroyForcibly();
            }
        }
    }

    private void runDaemon(String notifySocket, NotifyListener systemd) throws Exception {
        Path control = dir.resolve("control.sock");
        Path config = dir.resolve("vblk.json");
        Files.writeString(config, "{\"exports\": [" + DaemonRig.json(Map.of("id", "a", "image", "null:1M",
                "socket", dir.resolve("a.sock").toString())) + "," + DaemonRig.json(Map.of("id", "b", "image", "null:1M",
                "socket", dir.resolve("b.sock").toString())) + "]}");
        ProcessBuilder pb = new ProcessBuilder(ServeProcess.command(List.of(), "daemon", "--control", control.toString(),
                "--config", config.toString()))
                .redirectOutput(dir.resolve("out.txt").toFile()).redirectError(dir.resolve("err.txt").toFile());
        pb.environment().put("NOTIFY_SOCKET", notifySocket);
        Process p = pb.start();
        try {
            // Hang guards (60 s: a JVM's start on a loaded machine), not timings.
            String ready = systemd.until("READY=1", 60);
            assertNotNull(ready, "READY=1 after the start: " + Files.readString(dir.resolve("err.txt")));
            assertTrue(ready.contains("STATUS=serving 2 exports, 0 failed"), ready);
            assertTrue(Files.exists(dir.resolve("a.sock")) && Files.exists(dir.resolve("b.sock")), "both exports listen when ready");
            p.destroy(); // SIGTERM
            String stopping = systemd.until("STOPPING=1", 60);
            assertNotNull(stopping, "STOPPING=1 at shutdown: " + Files.readString(dir.resolve("err.txt")));
            assertTrue(p.waitFor(60, TimeUnit.SECONDS), "exited after SIGTERM");
            assertEquals(0, p.exitValue(), Files.readString(dir.resolve("err.txt")));
        } finally {
            p.destroyForcibly();
        }
    }
}
