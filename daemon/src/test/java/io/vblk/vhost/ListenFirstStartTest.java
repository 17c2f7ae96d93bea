package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.daemon.Main;

/**
 * A daemon restarted with a persisted configuration listens on its control socket and its
 * metrics before it opens the exports: while an export's open is held (an NBD server that
 * never greets), config.status says "starting" and the metrics answer (not ready, the exports
 * open so far), while a change waits for the start to end and then runs.
 */
class ListenFirstStartTest {
    private static final int HELD_MS = 600_000;

    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("unchecked")
    void controlSocketAndMetricsAnswerWhileTheExportsOpen() throws Exception {
        Path control = dir.resolve("control.sock");
        Path config = dir.resolve("vblk.json");
        try (StalledNbdServer server = new StalledNbdServer()) {
            Files.writeString(config, "{\"iothreads\": [], \"exports\": ["
                    + DaemonRig.json(Map.of("id", "n", "image", "null:1M", "socket", dir.resolve("n.sock").toString())) + ","
                    + DaemonRig.json(Map.of("id", "slow", "image", server.address(), "socket", dir.resolve("slow.sock").toString(),
                            "connect_timeout_ms", HELD_MS)) + "]}");
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
            int[] status = {-1};
            Thread daemon = new Thread(() -> status[0] = Main.run(new String[] {"daemon", "--control", control.toString(),
                "--config", config.toString(), "--persist", "--metrics", "127.0.0.1:0"}, o, o, false), "test-daemon");
            daemon.start();
            try {
                assertTrue(server.accepted.await(60, TimeUnit.SECONDS), "the daemon connected to the stalled server");
                assertTrue(Files.exists(control), "the control socket listens while the start waits: " + text(out));
                try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                    Map<String, Object> st = (Map<String, Object>) c.call("config.status", null).get("result");
                    assertEquals("starting", st.get("state"), st.toString());
                    assertEquals(2L, ((Number) st.get("start_exports_total")).longValue(), st.toString());
                    // a change (and a listing) waits for the start, then runs: a client that calls once the
                    // socket exists sees what it always saw
                    java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newSingleThreadExecutor();
                    java.util.concurrent.Future<Map<String, Object>> add = pool.submit(() -> {
                        try (DaemonRig.Client other = new DaemonRig.Client(control)) {
                            other.call("export.add", DaemonRig.json(Map.of("id", "m", "image", "null:1M",
                                    "socket", dir.resolve("m.sock").toString())));
                            return other.call("export.list", null);
                        }
                    });
                    pool.shutdown();
                    Thread.sleep(500);
                    assertFalse(add.isDone(), "the change waits while the start waits");
                    assertFalse(text(out).contains("daemon listening"), text(out));

                    Matcher m = Pattern.compile("metrics on (http://\\S+/metrics)").matcher(text(out));
                    assertTrue(m.find(), text(out));
                    String body = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(m.group(1))).build(),
                            HttpResponse.BodyHandlers.ofString()).body();
                    assertTrue(body.contains("vblk_daemon_ready 0"), body);
                    assertTrue(body.contains("vblk_disk_size_bytes{export=\"n\"}"), body);

                    server.release(); // the stalled open fails: the start keeps it as a failed entry and ends
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                    while (!text(out).contains("daemon listening") && System.nanoTime() < deadline) {
                        Thread.sleep(10);
                    }
                    st = (Map<String, Object>) c.call("config.status", null).get("result");
                    assertEquals("ready", st.get("state"), st.toString());
                    assertEquals(1, ((List<Object>) st.get("failed_exports")).size(), st.toString());
                    List<Map<String, Object>> listed = (List<Map<String, Object>>) add.get(60, TimeUnit.SECONDS).get("result");
                    assertEquals(List.of("n", "m"), listed.stream().map(x -> x.get("id")).toList());
                    c.call("daemon.shutdown", null);
                }
                daemon.join(TimeUnit.SECONDS.toMillis(60));
                assertEquals(0, status[0], text(out));
            } finally {
                server.release();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (daemon.isAlive() && System.nanoTime() < deadline) {
                    try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                        c.call("daemon.shutdown", null); // waits for the start
                    } catch (Exception ignored) {
                        // the daemon may not be up, or gone
                    }
                    daemon.join(200);
                }
            }
        }
    }

    private static String text(ByteArrayOutputStream out) {
        synchronized (out) {
            return out.toString(StandardCharsets.UTF_8);
        }
    }
}
