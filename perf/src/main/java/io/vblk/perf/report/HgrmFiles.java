package io.vblk.perf.report;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;

/**
 * {@code --hgrm DIR}: one HdrHistogram percentile distribution file per result
 * ({@code NAME.hgrm}, values in microseconds), the format HdrHistogram's plotter reads.
 */
public final class HgrmFiles {
    private HgrmFiles() {
    }

    /** Writes the files; returns how many. */
    public static int write(Path dir, List<BenchResult> results) throws IOException {
        Files.createDirectories(dir);
        int n = 0;
        for (BenchResult r : results) {
            Path file = dir.resolve(fileName(r.name()) + ".hgrm");
            try (OutputStream os = Files.newOutputStream(file);
                 PrintStream ps = new PrintStream(os, false, StandardCharsets.UTF_8)) {
                if (r.latency().histogram() != null) {
                    r.latency().histogram().outputPercentileDistribution(ps, 1000.0);
                } else {
                    writePoints(ps, r);
                }
            }
            n++;
        }
        return n;
    }

    /**
     * A result known only at some percentiles (fio's) in the same column layout, so that the
     * plotters that read .hgrm files draw it next to the others; counts are estimated.
     */
    private static void writePoints(PrintStream ps, BenchResult r) {
        ps.println("# percentiles reported by " + r.target() + "; TotalCount estimated from the request count");
        ps.printf(Locale.ROOT, "%12s %14s %10s %14s%n%n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
        for (double[] pt : r.latency().curve()) {
            double p = pt[0] / 100;
            ps.printf(Locale.ROOT, "%12.3f %2.12f %10d %14.2f%n", pt[1] / 1000.0, p, Math.round(p * r.requests()),
                    p < 1 ? 1 / (1 - p) : Double.POSITIVE_INFINITY);
        }
        ps.printf(Locale.ROOT, "#[Max     = %12.3f, Total count    = %12d]%n", r.latency().maxNs() / 1000.0, r.requests());
    }

    /** A result name as a file name: anything but letters, digits, '.', '_' and '-' becomes '-'. */
    public static String fileName(String name) {
        return name.replaceAll("[^A-Za-z0-9._-]", "-");
    }
}
