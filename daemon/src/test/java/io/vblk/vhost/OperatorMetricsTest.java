package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What an operator graphs and alerts on: a latency histogram with fixed buckets that a stats
 * reset does not take back, each shared I/O thread's busy time, the build, and the client's
 * process and JVM collectors.
 */
class OperatorMetricsTest {
    @TempDir
    Path dir;

    @Test
    void histogramBusyThreadsBuildAndProcessMetrics() throws Exception {
        Path control = dir.resolve("control.sock");
        Path sock = dir.resolve("a.sock");
        Path image = dir.resolve("a.img");
        Files.write(image, new byte[4 << 20]);
        Path config = dir.resolve("vblk.json");
        Files.writeString(config, "{\"iothreads\": [{\"id\": \"t1\"}], \"exports\": ["
                + DaemonRig.json(Map.of("id", "a", "image", image.toString(), "socket", sock.toString()))
                        .replace("}", ",\"iothreads\":[\"t1\"]}") + "]}");
        try (DaemonRig d = new DaemonRig(control, "--config", config.toString(), "--metrics", "127.0.0.1:0")) {
            DaemonTest.verifiedIo(sock, 10, 8);
            d.result("export.stats", "{\"id\":\"a\",\"reset_latency\":true}");
            Matcher m = Pattern.compile("metrics on (http://\\S+/metrics)").matcher(d.stdout());
            assertTrue(m.find(), d.stdout());
            String body = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(m.group(1))).build(),
                    HttpResponse.BodyHandlers.ofString()).body();
            assertTrue(body.contains("# TYPE vblk_disk_request_latency_seconds histogram"), body);
            // 20 requests (10 writes, 10 reads), still counted after the stats reset
            assertTrue(body.contains("vblk_disk_request_latency_seconds_bucket{export=\"a\",queue=\"0\",le=\"+Inf\"} 20"), body);
            assertTrue(body.contains("vblk_disk_request_latency_seconds_bucket{export=\"a\",queue=\"0\",le=\"0.001\"}"), body);
            assertTrue(body.contains("vblk_disk_request_latency_seconds_count{export=\"a\",queue=\"0\"} 20"), body);
            assertTrue(body.contains("vblk_iothread_busy_ratio{iothread=\"t1\"} "), body);
            assertTrue(body.contains("vblk_iothread_busy_seconds_total{iothread=\"t1\"} "), body);
            assertTrue(body.contains("vblk_build_info{java=\"" + Runtime.version() + "\",version=\"0."), body);
            assertTrue(body.contains("process_cpu_seconds_total "), body);
            assertTrue(body.contains("process_open_fds "), body);
            assertTrue(body.contains("jvm_memory_used_bytes{area=\"heap\"}"), body);
            assertEquals(-1, body.indexOf("vblk_disk_request_duration_seconds_count{export=\"a\",queue=\"0\"} 20"),
                    "the deprecated summary was reset by export.stats: " + body);
        }
    }
}
