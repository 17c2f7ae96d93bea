package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A live export's socket file removed (or its directory) under it: no frontend can connect to
 * it, so export.list and export.stats say {@code socket_missing: true}, the metrics
 * {@code vblk_disk_socket_missing 1}, and the log tells it once per export (rev15c: it went
 * unnoticed). An export whose socket is in place is not flagged.
 */
class RemovedSocketFileTest {
    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("unchecked")
    void aRemovedSocketFileIsToldOnce() throws Exception {
        Path sub = Files.createDirectory(dir.resolve("sub"));
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--metrics", "127.0.0.1:0")) {
            d.result("export.add", DaemonRig.json(Map.of("id", "a", "image", "null:1M", "socket", dir.resolve("a.sock").toString())));
            d.result("export.add", DaemonRig.json(Map.of("id", "b", "image", "null:1M", "socket", sub.resolve("b.sock").toString())));
            d.result("export.add", DaemonRig.json(Map.of("id", "c", "image", "null:1M", "socket", dir.resolve("c.sock").toString())));
            assertEquals(Map.of("a", false, "b", false, "c", false), missing(d));

            Files.delete(dir.resolve("a.sock"));
            Files.delete(sub.resolve("b.sock"));
            Files.delete(sub); // the directory too
            assertEquals(Map.of("a", true, "b", true, "c", false), missing(d));
            assertEquals(true, ((Map<String, Object>) d.result("export.stats", "{\"id\":\"a\"}")).get("socket_missing"));
            assertEquals(false, ((Map<String, Object>) d.result("export.stats", "{\"id\":\"c\"}")).get("socket_missing"));

            Matcher m = Pattern.compile("metrics on (http://\\S+/metrics)").matcher(d.stdout());
            assertTrue(m.find(), d.stdout());
            String body = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(m.group(1))).build(),
                    HttpResponse.BodyHandlers.ofString()).body();
            assertTrue(body.contains("vblk_disk_socket_missing{export=\"a\"} 1"), body);
            assertTrue(body.contains("vblk_disk_socket_missing{export=\"b\"} 1"), body);
            assertTrue(body.contains("vblk_disk_socket_missing{export=\"c\"} 0"), body);
            missing(d);

            String log = d.stderr() + d.stdout();
            assertEquals(1, count(log, "export a: socket " + dir.resolve("a.sock") + " removed or replaced"), log);
            assertEquals(1, count(log, "export b: socket " + sub.resolve("b.sock") + " removed or replaced"), log);
            assertEquals(0, count(log, "export c: socket"), log);
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> missing(DaemonRig d) throws Exception {
        Map<String, Object> out = new java.util.TreeMap<>();
        for (Map<String, Object> e : (List<Map<String, Object>>) d.result("export.list", null)) {
            out.put((String) e.get("id"), e.get("socket_missing"));
        }
        return out;
    }

    private static int count(String text, String needle) {
        int n = 0;
        for (int i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + 1)) {
            n++;
        }
        return n;
    }
}
