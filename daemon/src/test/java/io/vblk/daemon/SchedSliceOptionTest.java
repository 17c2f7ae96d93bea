package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.engine.Tuning;
import io.vblk.vhost.Log;

/**
 * {@code --sched-slice-us} of {@code vblk serve} / {@code sched_slice_us} of {@code export.add}
 * and {@code iothread.add}: the scheduler slice an export's own I/O threads, and a shared I/O
 * thread, run with while they wait for a CPU (the engine's SchedSliceTest shows the threads
 * taking it).
 */
class SchedSliceOptionTest {
    @TempDir
    Path dir;

    private static ExportSpec parse(String... keyValues) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) {
            m.put(keyValues[i], keyValues[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), "disk0");
    }

    @Test
    void defaultsToTheEngineDefaultAndIsReported() {
        ExportSpec s = parse("image", "null:1M", "socket", "s");
        assertEquals(Tuning.defaults().schedSliceNs() / 1000, s.schedSliceUs);
        assertEquals(s.schedSliceUs, s.toParams().get("sched_slice_us"));
    }

    @Test
    void takesZeroOrWhatTheKernelTakes() {
        assertEquals(300, parse("image", "null:1M", "socket", "s", "sched_slice_us", "300").schedSliceUs);
        assertEquals(0, parse("image", "null:1M", "socket", "s", "sched_slice_us", "0").schedSliceUs);
        assertEquals(100_000, parse("image", "null:1M", "socket", "s", "sched_slice_us", "100000").schedSliceUs);
        for (String bad : List.of("99", "100001", "-1")) {
            InvalidParams e = assertThrows(InvalidParams.class, () -> parse("image", "null:1M", "socket", "s", "sched_slice_us", bad));
            assertTrue(e.getMessage().contains("sched"), e.getMessage());
        }
    }

    @Test
    void theServeOptionBecomesTheParameter() {
        ExportOptions o = new ExportOptions();
        new picocli.CommandLine(o).parseArgs("--sched-slice-us", "250");
        assertEquals("250", o.toParams().get("sched_slice_us"));
    }

    @Test
    void anExportsDeviceAndASharedThreadGetTheSlice() throws Exception {
        Daemon d = new Daemon(Log.to(line -> { }));
        try {
            d.call("iothread.add", Params.json(Map.of("id", "t", "sched_slice_us", 250)));
            d.call("iothread.add", Params.json(Map.of("id", "u")));
            @SuppressWarnings("unchecked")
            List<Map<String, Object>> threads = (List<Map<String, Object>>) d.call("iothread.list", Params.json(Map.of()));
            Map<String, Object> byId = new LinkedHashMap<>();
            threads.forEach(t -> byId.put((String) t.get("id"), t.get("sched_slice_us")));
            assertEquals(Map.of("t", 250L, "u", Tuning.defaults().schedSliceNs() / 1000), byId);
            assertThrows(RpcError.class, () -> d.call("iothread.add", Params.json(Map.of("id", "v", "sched_slice_us", 50))));

            d.call("export.add", Params.json(Map.of("id", "own", "image", "null:1M", "socket", dir.resolve("own.sock").toString(),
                    "sched_slice_us", 300)));
            d.call("export.add", Params.json(Map.of("id", "shared", "image", "null:1M", "socket", dir.resolve("shared.sock").toString(),
                    "iothreads", List.of("t"))));
            Export own = d.exports().stream().filter(e -> e.spec.id.equals("own")).findFirst().orElseThrow();
            assertEquals(300_000, own.device().tuning().schedSliceNs(), "the export's own I/O threads' tuning");
        } finally {
            d.close();
        }
    }
}
