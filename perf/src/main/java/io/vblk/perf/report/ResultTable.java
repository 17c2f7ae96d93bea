package io.vblk.perf.report;

import java.io.PrintStream;
import java.util.List;
import java.util.Locale;

/**
 * The fio-like text table: one row per result, latencies in microseconds from the guest's view,
 * CPU per I/O of the serving side, bytes allocated per I/O on the data-plane threads.
 */
public final class ResultTable {
    private final PrintStream out;
    private final int nameWidth;

    /** A table on {@code out} whose name column is {@code nameWidth} wide. */
    public ResultTable(PrintStream out, int nameWidth) {
        this.out = out;
        this.nameWidth = Math.max(8, nameWidth);
    }

    /** The width that fits every name in {@code results}. */
    public static int nameWidth(List<BenchResult> results) {
        int w = 8;
        for (BenchResult r : results) {
            w = Math.max(w, r.name().length());
        }
        return w;
    }

    /** Prints the column headings. */
    public void header() {
        out.printf(Locale.ROOT, "%-" + nameWidth + "s %-8s %-10s %-9s %5s %7s %11s %8s %8s %8s %9s %9s %9s %8s %s%n",
                "name", "rw", "target", "backend", "bs", "qd", "IOPS", "MB/s", "p50", "p99", "p99.9", "max", "cpu/io", "B/io", "");
        out.printf(Locale.ROOT, "%-" + nameWidth + "s %-8s %-10s %-9s %5s %7s %11s %8s %8s %8s %9s %9s %9s %8s%n",
                "", "", "", "", "", "", "", "", "us", "us", "us", "us", "us", "");
    }

    /** Prints one result. */
    public void row(BenchResult r) {
        String qd = r.workload().queues() > 1 ? r.workload().depth() + "x" + r.workload().queues() : String.valueOf(r.workload().depth());
        String cpu = Double.isNaN(r.cpuUsPerIo()) ? "n/a" : String.format(Locale.ROOT, "%.2f", r.cpuUsPerIo());
        String alloc = Double.isNaN(r.allocBytesPerIo()) ? "n/a" : String.format(Locale.ROOT, "%.2f", r.allocBytesPerIo());
        out.printf(Locale.ROOT, "%-" + nameWidth + "s %-8s %-10s %-9s %5s %7s %,11.0f %8.1f %8.1f %8.1f %9.1f %9.1f %9s %8s %s%n",
                r.name(), r.workload().rw(), abbreviate(r.target(), 10), abbreviate(r.backend(), 9), size(r.workload().blockSize()), qd,
                r.iops(), r.megabytesPerSecond(), r.latencyUs(50), r.latencyUs(99), r.latencyUs(99.9), r.maxUs(), cpu, alloc,
                r.errors() > 0 ? r.errors() + " ERRORS" : "");
        out.flush();
    }

    /** Prints the comparisons: ratio, the two values, the goal and whether it is met. */
    public void comparisons(List<Comparison> comparisons) {
        if (comparisons.isEmpty()) {
            return;
        }
        int w = 10;
        for (Comparison c : comparisons) {
            w = Math.max(w, c.name().length());
        }
        out.printf(Locale.ROOT, "%n%-" + w + "s %-13s %9s %14s %14s  %s%n", "comparison", "metric", "ratio", "numerator",
                "denominator", "goal");
        for (Comparison c : comparisons) {
            Boolean met = c.met();
            out.printf(Locale.ROOT, "%-" + w + "s %-13s %8.2fx %14s %14s  %s%n", c.name(), c.metric(), c.ratio(),
                    value(c.numeratorValue(), c.metric()), value(c.denominatorValue(), c.metric()),
                    c.goal() == null ? "" : c.goal() + (met == null ? "" : met ? "  met" : "  MISSED"));
        }
        out.flush();
    }

    /** Prints the goal checks. */
    public void goals(List<GoalCheck> goals) {
        if (goals.isEmpty()) {
            return;
        }
        int w = 10;
        for (GoalCheck g : goals) {
            w = Math.max(w, g.goal().length());
        }
        out.printf(Locale.ROOT, "%ngoals%n");
        for (GoalCheck g : goals) {
            Boolean met = g.met();
            String verdict = met == null ? "unknown" : met ? "met" : String.format(Locale.ROOT, "MISSED by %.0f%%", 100 * g.shortfall());
            out.printf(Locale.ROOT, "  %-" + w + "s %16s  %s%n", g.goal(), number(g.value()) + " " + g.unit(), verdict);
        }
        out.flush();
    }

    private static String value(double v, String metric) {
        return "iops".equals(metric) ? String.format(Locale.ROOT, "%,.0f", v) : String.format(Locale.ROOT, "%.2f", v);
    }

    private static String number(double v) {
        if (Math.abs(v) >= 1000) {
            return String.format(Locale.ROOT, "%,.0f", v);
        }
        return String.format(Locale.ROOT, "%.2f", v);
    }

    private static String abbreviate(String s, int max) {
        return s.length() <= max ? s : s.substring(0, max - 1) + "~";
    }

    /** A byte count as fio writes it: 4k, 64k, 1m. */
    public static String size(long bytes) {
        if (bytes % (1L << 30) == 0) {
            return bytes / (1L << 30) + "g";
        }
        if (bytes % (1L << 20) == 0) {
            return bytes / (1L << 20) + "m";
        }
        if (bytes % 1024 == 0) {
            return bytes / 1024 + "k";
        }
        return String.valueOf(bytes);
    }
}
