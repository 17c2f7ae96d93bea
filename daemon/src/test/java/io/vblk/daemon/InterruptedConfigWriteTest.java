package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.prometheus.metrics.model.snapshots.DataPointSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.MetricSnapshot;

import io.vblk.vhost.Log;

/**
 * {@code --persist} when a write of the configuration dies after its temporary file is durable
 * and before the rename (power lost, the process killed): the file keeps its previous text byte
 * for byte, the change stands and its answer says it is not saved, the gauge shows it, and the
 * next change writes everything. A shutdown's closing of the exports removes none from the file.
 */
class InterruptedConfigWriteTest {
    @TempDir
    Path dir;

    private Map<String, Object> nullDisk(String id) {
        return Map.of("id", id, "image", "null:1M", "socket", dir.resolve(id + ".sock").toString());
    }

    private static double gauge(Daemon d, String name) {
        for (MetricSnapshot s : new ExportMetrics(d).collect()) {
            if (s.getMetadata().getName().equals(name)) {
                List<? extends DataPointSnapshot> points = s.getDataPoints();
                return ((GaugeSnapshot.GaugeDataPointSnapshot) points.get(0)).getValue();
            }
        }
        throw new AssertionError("no metric " + name);
    }

    @SuppressWarnings("unchecked")
    private static List<String> ids(Path file) throws Exception {
        Map<String, Object> doc = (Map<String, Object>) JsonRpc.JSON_IN.anyFrom(Files.readString(file));
        return ((List<Map<String, Object>>) doc.get("exports")).stream().map(e -> (String) e.get("id")).toList();
    }

    /** rev15c: a refused syscall is told by its message, not by the exception's class name. */
    @Test
    @SuppressWarnings("unchecked")
    void aRefusedWriteIsToldByItsMessage() throws Exception {
        Path file = dir.resolve("vblk.json");
        Daemon d = new Daemon(Log.to(line -> { }));
        try {
            d.persistTo(file, null);
            ConfigFile.beforeRename = () -> {
                throw new io.vblk.sys.NativeException(28, "renameat", "x"); // ENOSPC
            };
            Map<String, Object> answer = (Map<String, Object>) d.call("export.add", Params.json(nullDisk("a")));
            String why = String.valueOf(answer.get("persist_error"));
            assertTrue(why.startsWith("cannot write " + file + ": renameat"), why);
            assertFalse(why.contains("Exception"), why);
        } finally {
            ConfigFile.beforeRename = () -> { };
            d.close();
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void aWriteCutBeforeItsRenameLeavesTheOldFileWhole() throws Exception {
        Path file = dir.resolve("vblk.json");
        Daemon d = new Daemon(Log.to(line -> { }));
        try {
            d.persistTo(file, null);
            d.call("export.add", Params.json(nullDisk("a")));
            byte[] before = Files.readAllBytes(file);
            assertEquals(List.of("a"), ids(file));
            assertEquals(0.0, gauge(d, "vblk_config_persist_failing"));

            ConfigFile.beforeRename = () -> {
                throw new IllegalStateException("power lost");
            };
            Map<String, Object> answer = (Map<String, Object>) d.call("export.add", Params.json(nullDisk("b")));
            assertEquals("b", answer.get("id"), "the change stands: " + answer);
            assertTrue(String.valueOf(answer.get("persist_error")).contains("power lost"), answer.toString());
            assertArrayEquals(before, Files.readAllBytes(file), "the file as it was, never torn");
            assertFalse(Files.exists(ConfigFile.temporary(file)));
            assertTrue(d.configFile().failing());
            assertEquals(1.0, gauge(d, "vblk_config_persist_failing"));
            assertEquals(2, ((List<?>) d.call("export.list", Params.json(null))).size());

            ConfigFile.beforeRename = () -> { };
            answer = (Map<String, Object>) d.call("export.set_limits", Params.json(Map.of("id", "b", "iops_limit", 100)));
            assertNull(answer.get("persist_error"));
            assertEquals(List.of("a", "b"), ids(file));
            assertFalse(d.configFile().failing());
            assertEquals(0.0, gauge(d, "vblk_config_persist_failing"));
        } finally {
            ConfigFile.beforeRename = () -> { };
            d.close();
        }
        // The shutdown closed both exports: they stay in the file, a restart brings them back.
        assertEquals(List.of("a", "b"), ids(file));
    }
}
