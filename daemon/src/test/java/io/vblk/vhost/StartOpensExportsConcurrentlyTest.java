package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

/**
 * A restart with 200 persisted exports on one shared I/O thread opens them several at once
 * (StartOpener), not one after the other: while the first entry's open is held (an NBD server
 * that never greets), the 200 null disks after it are all served already. Once that open
 * fails, the start ends: READY=1 is sent once, every export is listed, and the listing and the
 * persisted file keep the file's order whatever order the opens ended in.
 */
class StartOpensExportsConcurrentlyTest {
    private static final int EXPORTS = 200;

    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("unchecked")
    void twoHundredExportsOpenBesideAStalledOneAndReadyIsSentOnce() throws Exception {
        Path control = dir.resolve("control.sock");
        Path config = dir.resolve("vblk.json");
        Path notify = dir.resolve("notify.sock");
        List<String> ids = new ArrayList<>();
        try (StalledNbdServer server = new StalledNbdServer(); NotifyListener systemd = new NotifyListener(notify.toString())) {
            StringBuilder entries = new StringBuilder(DaemonRig.json(Map.of("id", "slow", "image", server.address(),
                    "socket", dir.resolve("slow.sock").toString(), "connect_timeout_ms", 600_000)));
            ids.add("slow");
            for (int i = 0; i < EXPORTS; i++) {
                ids.add("d" + i);
                entries.append(',').append(DaemonRig.json(Map.of("id", "d" + i, "image", "null:1M",
                        "socket", dir.resolve("d" + i + ".sock").toString(), "iothreads", List.of("t0"))));
            }
            Files.writeString(config, "{\"iothreads\": [{\"id\": \"t0\"}], \"exports\": [" + entries + "]}");
            ProcessBuilder pb = new ProcessBuilder(ServeProcess.command(List.of(), "daemon", "--control", control.toString(),
                    "--config", config.toString(), "--persist"))
                    .redirectOutput(dir.resolve("out.txt").toFile()).redirectError(dir.resolve("err.txt").toFile());
            pb.environment().put("NOTIFY_SOCKET", notify.toString());
            Process p = pb.start();
            // Read as systemd does, all along: a datagram queue left full would block the daemon's sends.
            java.util.concurrent.BlockingQueue<String> notices = new java.util.concurrent.LinkedBlockingQueue<>();
            Thread reader = new Thread(() -> {
                try {
                    while (!Thread.currentThread().isInterrupted()) {
                        String d = systemd.next(1);
                        if (d != null) {
                            notices.add(d);
                        }
                    }
                } catch (InterruptedException e) {
                    // the test ends
                }
            }, "test-notify-reader");
            reader.setDaemon(true);
            reader.start();
            try {
                assertTrue(server.accepted.await(60, TimeUnit.SECONDS), "the daemon connected to the stalled server");
                // Hang guard, not a timing: one after the other, none of them opens while "slow" is held.
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                int up = 0;
                while (System.nanoTime() < deadline) {
                    up = 0;
                    for (int i = 0; i < EXPORTS; i++) {
                        up += Files.exists(dir.resolve("d" + i + ".sock")) ? 1 : 0;
                    }
                    if (up == EXPORTS) {
                        break;
                    }
                    Thread.sleep(50);
                }
                assertEquals(EXPORTS, up, "every null disk is served while the first entry's open is held: "
                        + Files.readString(dir.resolve("err.txt")));
                try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                    // The progress count trails the sockets by a moment: a worker that finds another
                    // reporting leaves its count to that one (StartOpener), so wait for it (a hang guard).
                    Map<String, Object> st = (Map<String, Object>) c.call("config.status", null).get("result");
                    while (((Number) st.get("start_exports_tried")).longValue() < EXPORTS && System.nanoTime() < deadline) {
                        Thread.sleep(20);
                        st = (Map<String, Object>) c.call("config.status", null).get("result");
                    }
                    assertEquals("starting", st.get("state"), st.toString());
                    assertEquals((long) EXPORTS, ((Number) st.get("start_exports_tried")).longValue(), st.toString());
                }
                server.release(); // the held open fails: kept as a failed entry, the start ends
                String ready = until(notices, "READY=1");
                assertNotNull(ready, "READY=1 after the start: " + Files.readString(dir.resolve("err.txt")));
                assertTrue(ready.contains("STATUS=serving " + EXPORTS + " exports, 1 failed"), ready);
                try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                    List<Map<String, Object>> listed = (List<Map<String, Object>>) c.call("export.list", null).get("result");
                    assertEquals(ids.subList(1, ids.size()), listed.stream().map(x -> x.get("id")).toList(), "the file's order");
                }
                List<Object> persisted = ((List<Map<String, Object>>) JSON.std.mapFrom(Files.readString(config)).get("exports"))
                        .stream().map(e -> e.get("id")).toList();
                assertEquals(ids, persisted, "the persisted file keeps its order");
                p.destroy(); // SIGTERM
                assertTrue(p.waitFor(60, TimeUnit.SECONDS), "exited after SIGTERM");
                assertNotNull(until(notices, "STOPPING=1"), "STOPPING=1 at shutdown");
                assertEquals(1, seen.stream().filter(d -> d.contains("READY=1")).count(), "READY=1 once: " + seen);
                assertEquals(0, p.exitValue(), Files.readString(dir.resolve("err.txt")));
            } finally {
                server.release();
                p.destroyForcibly();
                reader.interrupt();
                reader.join(5000);
            }
        }
    }

    /** Every notice taken so far, in order. */
    private final List<String> seen = new ArrayList<>();

    /** The next notice containing {@code wanted}, or null after 60 s (a hang guard). */
    private String until(java.util.concurrent.BlockingQueue<String> notices, String wanted) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        String d;
        while ((d = notices.poll(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS)) != null) {
            seen.add(d);
            if (d.contains(wanted)) {
                return d;
            }
        }
        return null;
    }
}
