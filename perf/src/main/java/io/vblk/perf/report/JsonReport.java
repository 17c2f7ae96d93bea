package io.vblk.perf.report;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@code --json FILE}: every result as an object (name, mode, backend, rw, bs, iodepth, iops,
 * latency percentiles in microseconds, CPU and allocation per I/O), every comparison as
 * {@code {"compare": NAME, "ratio": R, "numerator": ..., "denominator": ...}}, the goal checks,
 * and where and how it was measured.
 */
public final class JsonReport {
    private JsonReport() {
    }

    /** Writes the report to {@code file}. */
    public static void write(Path file, Map<String, Object> context, List<BenchResult> results, List<Comparison> comparisons,
                             List<GoalCheck> goals) throws IOException {
        Map<String, Object> root = new LinkedHashMap<>(context);
        List<Object> rs = new ArrayList<>();
        for (BenchResult r : results) {
            rs.add(result(r));
        }
        root.put("results", rs);
        List<Object> cs = new ArrayList<>();
        for (Comparison c : comparisons) {
            cs.add(comparison(c));
        }
        root.put("comparisons", cs);
        List<Object> gs = new ArrayList<>();
        for (GoalCheck g : goals) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("goal", g.goal());
            m.put("value", g.value());
            m.put("unit", g.unit());
            m.put("bound", g.bound());
            m.put("at_least", g.atLeast());
            m.put("met", g.met());
            gs.add(m);
        }
        root.put("goals", gs);
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        Files.writeString(file, Json.render(root), StandardCharsets.UTF_8);
    }

    /** One result as a JSON object. */
    public static Map<String, Object> result(BenchResult r) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("name", r.name());
        m.put("mode", r.mode());
        m.put("target", r.target());
        m.put("backend", r.backend());
        m.put("wait", r.waitStrategy());
        m.put("threading", r.threading());
        m.put("device", r.device());
        m.put("rw", r.workload().rw().fioName());
        m.put("read_percent", r.workload().effectiveReadPercent());
        m.put("bs", r.workload().blockSize());
        m.put("iodepth", r.workload().depth());
        m.put("queues", r.workload().queues());
        m.put("guest", r.workload().guestPolls() ? "poll" : "block");
        m.put("event_idx", r.workload().eventIdx());
        m.put("loop", r.workload().rateIops() > 0 ? "open" : "closed");
        m.put("rate_iops", r.workload().rateIops());
        m.put("runtime_s", r.seconds());
        m.put("requests", r.requests());
        m.put("errors", r.errors());
        m.put("iops", r.iops());
        m.put("mb_s", r.megabytesPerSecond());
        m.put("p50_us", r.latencyUs(50));
        m.put("p90_us", r.latencyUs(90));
        m.put("p99_us", r.latencyUs(99));
        m.put("p999_us", r.latencyUs(99.9));
        m.put("p9999_us", r.latencyUs(99.99));
        m.put("max_us", r.maxUs());
        m.put("cpu_us_per_io", r.cpuUsPerIo());
        m.put("cpu_scope", r.cpuScope());
        m.put("alloc_bytes_per_io", r.allocBytesPerIo());
        m.put("events_per_io", new java.util.TreeMap<>(r.perIo()));
        return m;
    }

    private static Map<String, Object> comparison(Comparison c) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("compare", c.name());
        m.put("metric", c.metric());
        m.put("ratio", c.ratio());
        m.put("numerator", c.numerator().name());
        m.put("denominator", c.denominator().name());
        m.put("numerator_value", c.numeratorValue());
        m.put("denominator_value", c.denominatorValue());
        m.put("goal", c.goal());
        m.put("met", c.met());
        return m;
    }
}
