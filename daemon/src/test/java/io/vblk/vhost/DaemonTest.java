package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.sys.UnixSocket;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * {@code vblk daemon}: every control-plane method driven over its socket while real vhost-user
 * frontends do verified I/O on the exports, bad input of every kind, 100 concurrent clients, and
 * a Prometheus scrape.
 */
class DaemonTest {
    private static final int IMAGE_BYTES = 4 << 20;

    @TempDir
    Path dir;

    private Path image(String name) throws IOException {
        Path p = dir.resolve(name);
        Files.write(p, new byte[IMAGE_BYTES]);
        return p;
    }

    private String addParams(String id, Path image, Path socket) {
        return DaemonRig.json(Map.of("id", id, "image", image.toString(), "socket", socket.toString(), "serial", id));
    }

    /** A frontend (the QEMU message sequence) on {@code socket}: writes, reads back and compares {@code rounds} blocks. */
    static void verifiedIo(Path socket, int rounds, int seed) {
        try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(socket), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            for (int i = 0; i < rounds; i++) {
                long sector = 8L * (i % 64);
                byte[] data = BlkQueue.pattern(sector, 4096, seed + i);
                q.write(sector, data);
                assertArrayEquals(data, q.read(sector, 4096), "sector " + sector);
            }
            qemu.stop(q);
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> queue0(Object stats) {
        return ((List<Map<String, Object>>) ((Map<String, Object>) stats).get("queues")).get(0);
    }

    private static long num(Object o) {
        return ((Number) o).longValue();
    }

    @Test
    @SuppressWarnings("unchecked")
    void everyMethodWithRealFrontends() throws Exception {
        Path control = dir.resolve("control.sock");
        Path sockA = dir.resolve("a.sock");
        Path sockB = dir.resolve("b.sock");
        Path config = dir.resolve("vblk.json");
        // This daemon's threads only: an earlier test's exports "a" and "b" had threads of the same
        // names, and one its stalled drain gave up on may still be ending.
        Set<Thread> earlier = Set.copyOf(Thread.getAllStackTraces().keySet());
        Files.writeString(config, "{\"iothreads\": [{\"id\": \"t1\", \"wait\": \"adaptive\"}], \"exports\": ["
                + addParams("a", image("a.img"), sockA).replace("}", ",\"iothreads\":[\"t1\"]}") + "]}");
        try (DaemonRig d = new DaemonRig(control, "--config", config.toString())) {
            assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(control));
            assertEquals(List.of("export.add", "export.remove", "export.list", "export.stats", "export.resize",
                    "export.set_limits", "export.rebind", "iothread.add", "iothread.list", "iothread.remove", "config.save",
                    "config.status", "config.retry", "methods.list", "daemon.version", "daemon.shutdown"), d.result("methods.list", null));
            assertTrue(((Map<String, Object>) d.result("daemon.version", null)).get("version").toString().startsWith("0."));

            Map<String, Object> added = (Map<String, Object>) d.result("export.add",
                    addParams("b", image("b.img"), sockB).replace("}", ",\"iothreads\":[\"t1\"]}"));
            assertEquals((long) IMAGE_BYTES, num(added.get("size_bytes")));
            List<Map<String, Object>> list = (List<Map<String, Object>>) d.result("export.list", null);
            assertEquals(List.of("a", "b"), list.stream().map(m -> m.get("id")).toList());
            assertEquals(sockB.toString(), list.get(1).get("socket"));

            verifiedIo(sockA, 20, 1);
            verifiedIo(sockB, 10, 2);
            Map<String, Object> qa = queue0(d.result("export.stats", "{\"id\":\"a\"}"));
            assertEquals(40L, num(qa.get("completions")), "20 writes and 20 reads: " + qa);
            assertEquals(0L, num(qa.get("in_flight")));
            assertEquals(20L, num(qa.get("reads")));
            assertEquals(20L, num(qa.get("writes")));
            assertEquals(0L, num(qa.get("flushes")));
            assertEquals(0L, num(qa.get("errors")));
            Map<String, Object> lat = (Map<String, Object>) qa.get("latency");
            assertEquals(40L, num(lat.get("count")));
            assertTrue(((Number) lat.get("max_us")).doubleValue() >= ((Number) lat.get("p50_us")).doubleValue());
            assertEquals(20L, num(queue0(d.result("export.stats", "{\"id\":\"b\"}")).get("completions")));

            // Limits change while the export serves, and I/O goes on under them.
            Map<String, Object> limits = (Map<String, Object>) d.result("export.set_limits", "{\"id\":\"b\",\"iops_limit\":1000,\"bps_limit\":\"64M\"}");
            assertEquals(1000L, num(limits.get("iops_limit")));
            assertEquals(64L << 20, num(limits.get("bps_limit")));
            verifiedIo(sockB, 5, 3);
            assertEquals(1000L, num(((List<Map<String, Object>>) d.result("export.list", null)).get(1).get("iops_limit")));
            d.result("export.set_limits", "{\"id\":\"b\",\"iops_limit\":0,\"bps_limit\":0}");

            // Both exports share I/O thread t1; the daemon started no I/O thread per export.
            List<Map<String, Object>> threads = (List<Map<String, Object>>) d.result("iothread.list", null);
            assertEquals(1, threads.size(), threads.toString());
            assertEquals("t1", threads.get(0).get("id"));
            double busyFraction = ((Number) threads.get(0).get("busy_fraction")).doubleValue();
            assertTrue(busyFraction >= 0 && busyFraction <= 1, "busy fraction " + busyFraction);
            assertEquals(List.of(Map.of("id", "a", "queues", List.of(0)), Map.of("id", "b", "queues", List.of(0))),
                    threads.get(0).get("exports"));
            assertEquals(0, Thread.getAllStackTraces().keySet().stream().filter(t -> t.getName().matches("vblk-[ab]-io.*")
                    && !earlier.contains(t)).count(), "I/O threads of exports a and b");
            assertEquals(-32002, num(DaemonRig.error(d.call("iothread.remove", "{\"id\":\"t1\"}")).get("code")), "in use");
            assertEquals(-32001, num(DaemonRig.error(d.call("iothread.add", "{\"id\":\"t1\"}")).get("code")));
            assertEquals(List.of(0), ((Map<String, Object>) d.result("iothread.add", "{\"id\":\"t2\",\"cpus\":[0],\"wait\":\"blocking\"}")).get("cpus"));
            assertEquals(-32602, num(DaemonRig.error(d.call("iothread.add", "{\"id\":\"t3\",\"cpus\":[1023]}")).get("code")));
            assertEquals(-32000, num(DaemonRig.error(d.call("export.add", addParams("c", image("c.img"), dir.resolve("c.sock"))
                    .replace("}", ",\"iothreads\":[\"nope\"]}"))).get("code")));
            assertEquals(Map.of("id", "t2", "removed", true), d.result("iothread.remove", "{\"id\":\"t2\"}"));
            // Online resize: grow, refuse a shrink unless allowed, and serve the new sectors.
            Map<String, Object> resized = (Map<String, Object>) d.result("export.resize", "{\"id\":\"a\",\"size\":\"8M\"}");
            assertEquals(8L << 20, num(resized.get("size_bytes")));
            assertEquals((long) IMAGE_BYTES, num(resized.get("previous_size_bytes")));
            assertEquals(8L << 20, Files.size(dir.resolve("a.img")), "the image file grew");
            assertEquals(-32602, num(DaemonRig.error(d.call("export.resize", "{\"id\":\"a\",\"size\":4194304}")).get("code")));
            assertEquals(-32602, num(DaemonRig.error(d.call("export.resize", "{\"id\":\"a\",\"size\":1000}")).get("code")));
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sockA), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                byte[] cfg = qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                assertEquals((8L << 20) / 512, java.nio.ByteBuffer.wrap(cfg).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong(0));
                qemu.start(qemu.linuxFeatures(), true, null, q);
                byte[] data = BlkQueue.pattern(12_000, 4096, 11);
                q.write(12_000, data);
                assertArrayEquals(data, q.read(12_000, 4096));
                qemu.stop(q);
            }
            assertEquals(6L << 20, num(((Map<String, Object>) d.result("export.resize",
                    "{\"id\":\"a\",\"size\":6291456,\"allow_shrink\":true}")).get("size_bytes")));
            assertEquals(6L << 20, Files.size(dir.resolve("a.img")));

            // Removing an export while its frontend has I/O going: drained, socket gone, the other export unaffected.
            AtomicLong done = new AtomicLong();
            Thread busy = new Thread(() -> {
                try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sockA), g, 1)) {
                    BlkQueue q = g.queue(0, 128, true);
                    qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                    qemu.start(qemu.linuxFeatures(), true, null, q);
                    while (true) {
                        q.write(8, BlkQueue.pattern(8, 4096, 9));
                        done.incrementAndGet();
                    }
                } catch (RuntimeException | AssertionError e) {
                    // the export went away under it: expected
                }
            });
            busy.start();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (done.get() < 50 && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            assertTrue(done.get() >= 50, "the frontend got going");
            // Attached: refused without force (rev15c), as QEMU's block-export-del.
            assertEquals(-32002, num(DaemonRig.error(d.call("export.remove", "{\"id\":\"a\"}")).get("code")));
            assertEquals(Map.of("id", "a", "removed", true, "frontend_disconnected", true),
                    d.result("export.remove", "{\"id\":\"a\",\"force\":true}"));
            assertFalse(Files.exists(sockA), "socket removed");
            verifiedIo(sockB, 5, 4);
            // Its frontend's waits for a reply or a completion that the removal cut off end after
            // testkit's 30 s default: this join must outlast them (it was 30 s too, and lost).
            busy.join(90_000);
            assertFalse(busy.isAlive());
            assertEquals(List.of("b"), ((List<Map<String, Object>>) d.result("export.list", null)).stream().map(m -> m.get("id")).toList());

            assertEquals(Map.of("shutting_down", true), d.result("daemon.shutdown", null));
            assertEquals(0, d.awaitExit());
            assertFalse(Files.exists(sockB), "every export's socket removed at shutdown");
            assertFalse(Files.exists(control), "control socket removed");
            assertFalse(d.stderr().contains("\tat "), d.stderr());
        }
    }

    @Test
    void badInputGetsAClearErrorAndTheDaemonKeepsServing() throws Exception {
        Path control = dir.resolve("control.sock");
        Path sock = dir.resolve("a.sock");
        Path img = image("a.img");
        try (DaemonRig d = new DaemonRig(control); DaemonRig.Client c = d.client()) {
            d.result("export.add", addParams("a", img, sock));
            assertError(c.raw("{not json"), -32700, "not valid JSON");
            assertError(c.raw("[1,2]"), -32600, "batches are not supported");
            assertError(c.raw("42"), -32600, "one JSON object per line");
            assertError(c.raw("{\"jsonrpc\":\"1.0\",\"method\":\"methods.list\",\"id\":1}"), -32600, "\"jsonrpc\" must be \"2.0\"");
            assertError(c.raw("{\"jsonrpc\":\"2.0\",\"method\":7,\"id\":1}"), -32600, "\"method\" must be a string");
            assertError(c.raw("{\"jsonrpc\":\"2.0\",\"method\":\"methods.list\",\"id\":{}}"), -32600, "\"id\" must be");
            assertError(c.raw("{\"jsonrpc\":\"2.0\",\"method\":\"export.list\",\"params\":[1],\"id\":1}"), -32602, "named parameters");
            assertError(c.raw("{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"method\":\"y\",\"id\":1}"), -32700, "not valid JSON");
            assertError(c.call("export.frobnicate", null), -32601, "unknown method 'export.frobnicate'");
            assertError(c.call("export.add", "{\"id\":\"b\",\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("b.sock")
                    + "\",\"queues\":\"two\"}"), -32602, "queues must be an integer, got the string \"two\"");
            assertError(c.call("export.add", "{\"id\":\"b\",\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("b.sock")
                    + "\",\"read_only\":1}"), -32602, "read_only must be true or false, got the number 1");
            assertError(c.call("export.add", "{\"id\":\"b\",\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("b.sock")
                    + "\",\"queus\":2}"), -32602, "unknown parameter 'queus'");
            assertError(c.call("export.add", "{\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("b.sock") + "\"}"), -32602,
                    "id is required");
            assertError(c.call("export.add", addParams("a", img, dir.resolve("b.sock"))), -32001, "export 'a' already exists");
            assertError(c.call("export.add", addParams("b", img, sock)), -32001, "already used by export 'a'");
            Path other = dir.resolve("other.sock");
            UnixSocket someoneElse = UnixSocket.listen(other, 1);
            try {
                assertError(c.call("export.add", addParams("b", img, other)), -32002, "another process listens on it");
                assertTrue(SocketFile.isSocket(other), "the other listener's socket left alone");
            } finally {
                someoneElse.close();
            }
            assertError(c.call("export.add", addParams("b", dir.resolve("missing.img"), dir.resolve("b.sock"))), -32602,
                    "image not found");
            assertError(c.call("export.add", addParams("b", dir, dir.resolve("b.sock"))), -32602, "image is a directory");
            assertError(c.call("export.add", addParams("b", image("b.img"), dir.resolve("no/such/dir/b.sock"))), -32602,
                    "socket directory does not exist");
            assertError(c.call("export.remove", "{\"id\":\"zz\"}"), -32000, "no export 'zz'");
            assertError(c.call("export.stats", "{\"id\":5}"), -32602, "id must be a string, got the number 5");
            assertError(c.call("export.set_limits", "{\"id\":\"a\",\"iops_limit\":-1}"), -32602, "iops_limit must be at least 0");
            assertFalse(Files.exists(dir.resolve("b.sock")), "no socket left behind by a failed export.add");
            // A notification (no id) gets no response; the next request on the same connection does.
            assertEquals(99, num(((Map<?, ?>) JSON.std.anyFrom(c.raw("{\"jsonrpc\":\"2.0\",\"method\":\"methods.list\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"export.list\",\"id\":99}"))).get("id")));
            verifiedIo(sock, 10, 5);
        }
    }

    @SuppressWarnings("unchecked")
    private static void assertError(String line, int code, String text) throws IOException {
        assertError((Map<String, Object>) JSON.std.anyFrom(line), code, text);
    }

    private static void assertError(Map<String, Object> response, int code, String text) {
        Map<String, Object> e = DaemonRig.error(response);
        assertEquals(code, num(e.get("code")), response.toString());
        assertTrue(String.valueOf(e.get("message")).contains(text), "'" + text + "' expected in " + response);
        assertTrue(response.containsKey("id"), "an error response carries an id (null when unknown)");
    }

    @Test
    @SuppressWarnings("unchecked")
    void hundredConcurrentClients() throws Exception {
        Path control = dir.resolve("control.sock");
        Path sock = dir.resolve("a.sock");
        try (DaemonRig d = new DaemonRig(control)) {
            d.result("export.add", addParams("a", image("a.img"), sock));
            ExecutorService pool = Executors.newFixedThreadPool(100);
            List<DaemonRig.Client> clients = new ArrayList<>();
            try {
                for (int i = 0; i < 100; i++) {
                    clients.add(d.client()); // all connected at once
                }
                List<Future<Integer>> results = new ArrayList<>();
                for (DaemonRig.Client c : clients) {
                    results.add(pool.submit(() -> {
                        int ok = 0;
                        for (int r = 0; r < 5; r++) {
                            ok += c.call("methods.list", null).containsKey("result") ? 1 : 0;
                            ok += ((List<Object>) c.call("export.list", null).get("result")).size();
                            ok += c.call("export.stats", "{\"id\":\"a\"}").containsKey("result") ? 1 : 0;
                        }
                        return ok;
                    }));
                }
                verifiedIo(sock, 10, 6);
                for (Future<Integer> f : results) {
                    assertEquals(15, f.get(60, TimeUnit.SECONDS));
                }
            } finally {
                for (DaemonRig.Client c : clients) {
                    c.close();
                }
                pool.shutdownNow();
            }
            verifiedIo(sock, 5, 7);
        }
    }

    @Test
    void prometheusScrape() throws Exception {
        Path control = dir.resolve("control.sock");
        Path sock = dir.resolve("a.sock");
        try (DaemonRig d = new DaemonRig(control, "--metrics", "127.0.0.1:0")) {
            d.result("export.add", addParams("a", image("a.img"), sock));
            verifiedIo(sock, 10, 8);
            Matcher m = Pattern.compile("metrics on (http://\\S+/metrics)").matcher(d.stdout());
            assertTrue(m.find(), d.stdout());
            HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(m.group(1))).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode());
            String body = r.body();
            assertTrue(body.contains("vblk_disk_requests_completed_total{export=\"a\",queue=\"0\"} 20.0"), body);
            assertTrue(body.contains("vblk_disk_bytes_total{export=\"a\",queue=\"0\"} 81920.0"), body);
            assertTrue(body.contains("vblk_disk_io_now{export=\"a\",queue=\"0\"} 0.0"), body);
            assertTrue(body.contains("vblk_image_locks_kept_total 0.0"), body); // no undrained close (session 10)
            assertTrue(body.contains("vblk_undrained_backends "), body); // session 12: back ends the kernel holds after close
            assertTrue(body.contains("vblk_disk_reads_total{export=\"a\",queue=\"0\"} 10.0"), body);
            assertTrue(body.contains("vblk_disk_writes_total{export=\"a\",queue=\"0\"} 10.0"), body);
            assertTrue(body.contains("vblk_disk_size_bytes{export=\"a\"} " + (double) IMAGE_BYTES), body);
            assertTrue(body.contains("vblk_disk_request_duration_seconds_count{export=\"a\",queue=\"0\"} 20"), body);
            assertTrue(body.contains("vblk_disk_request_duration_seconds{export=\"a\",queue=\"0\",quantile=\"0.99\"}"), body);
            assertTrue(body.contains("# TYPE vblk_disk_quarantines_total counter"), body);
        }
    }
}
