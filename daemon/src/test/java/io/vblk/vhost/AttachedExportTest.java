package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * rev15c, an operator with many disks: which export a frontend belongs to and whether a VM is
 * attached (log lines name the export; export.list, export.stats and the metrics show the
 * frontend), and export.remove of an attached export refused unless forced, as QEMU's
 * block-export-del refuses an export in use.
 */
class AttachedExportTest {
    @TempDir
    Path dir;

    private static long num(Object o) {
        return ((Number) o).longValue();
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> listed(DaemonRig d, String id) throws IOException {
        for (Map<String, Object> e : (List<Map<String, Object>>) d.result("export.list", null)) {
            if (id.equals(e.get("id"))) {
                return e;
            }
        }
        throw new AssertionError("export " + id + " not listed");
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> stats(DaemonRig d, String id) throws IOException {
        return (Map<String, Object>) d.result("export.stats", "{\"id\":\"" + id + "\"}");
    }

    private static String scrape(DaemonRig d) throws IOException {
        Matcher m = Pattern.compile("metrics on http://127\\.0\\.0\\.1:(\\d+)/metrics").matcher(d.stdout());
        assertTrue(m.find(), d.stdout());
        return MetricsEndpointAttackTest.exchange(Integer.parseInt(m.group(1)),
                "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    }

    @Test
    @SuppressWarnings("unchecked")
    void anAttachedExportIsShownNamedInItsLogLinesAndNotRemovedWithoutForce() throws Exception {
        Path sockA = dir.resolve("a.sock");
        long pid = ProcessHandle.current().pid();
        Map<String, Object> forced = null;
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--metrics", "127.0.0.1:0")) {
            for (String id : List.of("a", "b")) {
                d.result("export.add", DaemonRig.json(Map.of("id", id, "image", DaemonRig.image(dir, id + ".img").toString(),
                        "socket", dir.resolve(id + ".sock").toString())));
            }
            assertTrue(listed(d, "a").containsKey("frontend"), "export.list has the key, null when none");
            assertNull(listed(d, "a").get("frontend"));
            assertNull(stats(d, "a").get("frontend"));

            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sockA), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                byte[] data = BlkQueue.pattern(8, 4096, 3);
                q.write(8, data);
                assertArrayEquals(data, q.read(8, 4096));

                for (Map<String, Object> f : List.of((Map<String, Object>) listed(d, "a").get("frontend"),
                        (Map<String, Object>) stats(d, "a").get("frontend"))) {
                    assertNotNull(f, "a frontend is attached to a");
                    assertEquals(pid, num(f.get("pid")), f.toString());
                    assertEquals(num(Files.getAttribute(dir, "unix:uid")), num(f.get("uid")), f.toString());
                    assertEquals(1, num(f.get("queues_started")), f.toString());
                    Instant since = Instant.parse((String) f.get("connected_since"));
                    assertFalse(since.isAfter(Instant.now()), f.toString());
                }
                assertNull(listed(d, "b").get("frontend"), "b has none");
                String metrics = scrape(d);
                assertTrue(metrics.contains("vblk_disk_frontend_connected{export=\"a\"} 1.0"), metrics);
                assertTrue(metrics.contains("vblk_disk_frontend_connected{export=\"b\"} 0.0"), metrics);

                // Every line of a's server names it (frontends are numbered per export).
                String err = d.stderr();
                assertTrue(err.contains("export a: frontend 1 connected (pid " + pid), err);
                assertTrue(err.contains("export a: frontend 1: queue 0 started"), err);
                assertFalse(err.contains("vblk: frontend 1"), err);

                Map<String, Object> refused = DaemonRig.error(d.call("export.remove", "{\"id\":\"a\"}"));
                assertEquals(-32002, num(refused.get("code")), refused.toString());
                assertTrue(((String) refused.get("message")).contains("pid " + pid), refused.toString());
                assertTrue(Files.exists(sockA), "not removed");
                assertArrayEquals(data, q.read(8, 4096), "still served");

                forced = (Map<String, Object>) d.result("export.remove", "{\"id\":\"a\",\"force\":true}");
            } catch (RuntimeException | AssertionError e) {
                if (forced == null) {
                    throw e;
                }
                // the forced removal cut the frontend off: its own close may fail
            }
            assertNotNull(forced);
            assertEquals(true, forced.get("removed"));
            assertEquals(true, forced.get("frontend_disconnected"), forced.toString());
            assertFalse(Files.exists(sockA));
            // Not attached: removed without force, and no frontend_disconnected in the answer.
            assertEquals(Map.of("id", "b", "removed", true), d.result("export.remove", "{\"id\":\"b\"}"));
        }
    }

    /** The shutdown says so before the first export stops, and says "stopped": they stay in a persisted file. */
    @Test
    void shutdownIsLoggedFirstAndItsExportsStopped() throws Exception {
        DaemonRig d = new DaemonRig(dir.resolve("control.sock"));
        try (d) {
            d.result("export.add", DaemonRig.json(Map.of("id", "a", "image", DaemonRig.image(dir, "a.img").toString(),
                    "socket", dir.resolve("a.sock").toString())));
        }
        String err = d.stderr();
        int shuttingDown = err.indexOf("shutting down");
        int stopped = err.indexOf("export a: stopped");
        assertTrue(shuttingDown >= 0 && stopped > shuttingDown, err);
        assertFalse(err.contains("export a: removed"), err);
        // The ready line is timestamped as the log lines are ("HH:MM:SS.mmm vblk: ...").
        assertTrue(d.stdout().matches("(?s)\\d\\d:\\d\\d:\\d\\d\\.\\d{3} vblk: daemon listening on .*"), d.stdout());
    }
}
