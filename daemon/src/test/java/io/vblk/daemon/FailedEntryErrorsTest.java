package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * The error config.status shows for an entry that failed at start stays current: an
 * export.add (iothread.add) of its id that fails again replaces it, as config.retry does, and
 * an iothread.remove of a thread a failed export names says so in that export's error.
 */
class FailedEntryErrorsTest {
    @TempDir
    Path dir;

    private Map<String, Object> entry(String id, Path image, Object... more) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("image", image.toString());
        m.put("socket", dir.resolve(id + ".sock").toString());
        for (int i = 0; i < more.length; i += 2) {
            m.put((String) more[i], more[i + 1]);
        }
        return m;
    }

    @SuppressWarnings("unchecked")
    private static String error(Daemon d, String list, String id) {
        Map<String, Object> status = (Map<String, Object>) d.call("config.status", Params.json(null));
        for (Map<String, Object> f : (List<Map<String, Object>>) status.get(list)) {
            if (f.get("id").equals(id)) {
                return (String) f.get("error");
            }
        }
        throw new AssertionError("no failed entry " + id + " in " + status);
    }

    @Test
    void aFailedAddOfTheIdReplacesTheStoredError() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            assertNotNull(d.applyOrKeep(true, entry("a", dir.resolve("first.img"))));
            assertTrue(error(d, "failed_exports", "a").contains("first.img"), error(d, "failed_exports", "a"));
            assertThrows(RpcError.class, () -> d.call("export.add", Params.json(entry("a", dir.resolve("second.img")))));
            String now = error(d, "failed_exports", "a");
            assertTrue(now.contains("second.img") && !now.contains("first.img"), now);

            assertNotNull(d.applyOrKeep(false, Map.of("id", "t9", "cpus", List.of(1000))));
            assertTrue(error(d, "failed_iothreads", "t9").contains("1000"), error(d, "failed_iothreads", "t9"));
            assertThrows(RpcError.class, () -> d.call("iothread.add", Params.json(Map.of("id", "t9", "cpus", List.of(1001)))));
            now = error(d, "failed_iothreads", "t9");
            assertTrue(now.contains("1001") && !now.contains("1000"), now);
        }
    }

    @Test
    void removingAFailedThreadUpdatesTheExportsThatNameIt() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            assertNotNull(d.applyOrKeep(false, Map.of("id", "t9", "cpus", List.of(1000))));
            assertNotNull(d.applyOrKeep(true, entry("x", dir.resolve("x.img"), "iothreads", List.of("t9"))));
            assertTrue(error(d, "failed_exports", "x").contains("I/O thread 't9' failed at start"), error(d, "failed_exports", "x"));
            d.call("iothread.remove", Params.json(Map.of("id", "t9")));
            String now = error(d, "failed_exports", "x");
            assertTrue(!now.contains("failed at start") && now.contains("no I/O thread 't9'"), now);
            // It is what an add of the entry answers now.
            RpcError e = assertThrows(RpcError.class,
                    () -> d.call("export.add", Params.json(entry("x", dir.resolve("x.img"), "iothreads", List.of("t9")))));
            assertTrue(e.getMessage().contains("no I/O thread 't9'"), e.getMessage());
            assertEquals(1, d.failedEntries());
        }
    }
}
