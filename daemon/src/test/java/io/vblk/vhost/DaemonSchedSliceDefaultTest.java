package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.daemon.Main;

/**
 * {@code vblk daemon --sched-slice-us N}: the slice of every export and I/O thread that sets no
 * {@code sched_slice_us}; one that sets it keeps its own. The persisted entries write the slice
 * in effect, so a restart from the file without the option (or with another) serves each as
 * it was.
 */
class DaemonSchedSliceDefaultTest {
    @TempDir
    Path dir;

    @SuppressWarnings("unchecked")
    private static Map<Object, Object> slices(Object listing) {
        Map<Object, Object> m = new LinkedHashMap<>();
        for (Map<String, Object> e : (List<Map<String, Object>>) listing) {
            if (e.containsKey("sched_slice_us")) {
                m.put(e.get("id"), ((Number) e.get("sched_slice_us")).longValue());
            }
        }
        return m;
    }

    @Test
    @SuppressWarnings("unchecked")
    void theDefaultAppliesToEntriesThatSetNoneAndIsSavedInEach() throws Exception {
        Path config = dir.resolve("vblk.json");
        Object exports;
        Object threads;
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist",
                "--sched-slice-us", "500")) {
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("iothread.add", "{\"id\":\"t1\",\"sched_slice_us\":0}");
            d.result("export.add", DaemonRig.json(Map.of("id", "a", "image", "null:1M", "socket", dir.resolve("a.sock").toString())));
            d.result("export.add", DaemonRig.json(Map.of("id", "b", "image", "null:1M", "socket", dir.resolve("b.sock").toString(),
                    "sched_slice_us", 200)));
            exports = slices(d.result("export.list", null));
            threads = slices(d.result("iothread.list", null));
            assertEquals(Map.of("a", 500L, "b", 200L), exports);
            assertEquals(Map.of("t0", 500L, "t1", 0L), threads);
            Map<String, Object> doc = (Map<String, Object>) JSON.std.anyFrom(Files.readString(config));
            assertEquals(Map.of("t0", 500L, "t1", 0L), slices(doc.get("iothreads")));
            assertEquals(Map.of("a", 500L, "b", 200L), slices(doc.get("exports")));
        }
        // Restarted with another default: every entry as it was.
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist",
                "--sched-slice-us", "0")) {
            assertEquals(exports, slices(d.result("export.list", null)));
            assertEquals(threads, slices(d.result("iothread.list", null)));
        }
    }

    @Test
    void aSliceOutOfRangeIsRefusedAtStart() {
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = Main.run(new String[] {"daemon", "--control", dir.resolve("c.sock").toString(), "--sched-slice-us", "5"},
                new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8), false);
        assertEquals(2, status);
        String message = err.toString(StandardCharsets.UTF_8);
        assertTrue(message.contains("--sched-slice-us") && message.contains("100 to 100000"), message);
    }
}
