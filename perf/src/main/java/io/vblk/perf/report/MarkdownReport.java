package io.vblk.perf.report;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code --markdown FILE}: the results, comparisons and goals as Markdown tables headed by the
 * date, machine, exact command and load, ready to paste into the README.
 */
public final class MarkdownReport {
    private MarkdownReport() {
    }

    /** Writes the report to {@code file}. */
    public static void write(Path file, Map<String, Object> context, List<BenchResult> results, List<Comparison> comparisons,
                             List<GoalCheck> goals) throws IOException {
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, "Measured %s on `%s`, load %.2f at the start and %.2f at the end:%n%n",
                context.get("date"), context.get("machine"), (Double) context.get("load_before"), (Double) context.get("load_after")));
        sb.append("```sh\n").append(context.get("command")).append("\n```\n\n");
        if (!comparisons.isEmpty()) {
            sb.append("| comparison | metric | ratio | numerator | denominator | goal |\n|---|---|---:|---:|---:|---|\n");
            for (Comparison c : comparisons) {
                Boolean met = c.met();
                sb.append(String.format(Locale.ROOT, "| %s | %s | %.2fx | %s | %s | %s |%n", c.name(), c.metric(), c.ratio(),
                        value(c.numeratorValue(), c.metric()), value(c.denominatorValue(), c.metric()),
                        c.goal() == null ? "" : c.goal() + (met == null ? "" : met ? " met" : " **missed**")));
            }
            sb.append('\n');
        }
        if (!goals.isEmpty()) {
            sb.append("| goal | measured | verdict |\n|---|---:|---|\n");
            for (GoalCheck g : goals) {
                Boolean met = g.met();
                sb.append(String.format(Locale.ROOT, "| %s | %s %s | %s |%n", g.goal(), value(g.value(), g.unit()), g.unit(),
                        met == null ? "unknown" : met ? "met" : String.format(Locale.ROOT, "**missed by %.0f%%**", 100 * g.shortfall())));
            }
            sb.append('\n');
        }
        sb.append("| run | target | back end | qd | guest | IOPS | MB/s | p50 us | p99 us | p99.9 us | max us | CPU us/IO | B/IO |\n");
        sb.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (BenchResult r : results) {
            sb.append(String.format(Locale.ROOT, "| %s | %s | %s | %d | %s | %,.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %s | %s |%n",
                    r.name(), r.target(), r.backend(), r.workload().depth(), r.workload().guestPolls() ? "poll" : "block", r.iops(),
                    r.megabytesPerSecond(), r.latencyUs(50), r.latencyUs(99), r.latencyUs(99.9), r.maxUs(),
                    Double.isNaN(r.cpuUsPerIo()) ? "n/a" : String.format(Locale.ROOT, "%.2f", r.cpuUsPerIo()),
                    Double.isNaN(r.allocBytesPerIo()) ? "n/a" : String.format(Locale.ROOT, "%.2f", r.allocBytesPerIo())));
        }
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        Files.writeString(file, sb.toString(), StandardCharsets.UTF_8);
    }

    private static String value(double v, String unit) {
        if ("iops".equals(unit) || "IOPS".equals(unit)) {
            return String.format(Locale.ROOT, "%,.0f", v);
        }
        return String.format(Locale.ROOT, "%.2f", v);
    }
}
