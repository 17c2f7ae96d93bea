package io.vblk.perf;

import java.io.IOException;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.Comparison;
import io.vblk.perf.report.GoalCheck;
import io.vblk.perf.report.HgrmFiles;
import io.vblk.perf.report.JsonReport;
import io.vblk.perf.report.MarkdownReport;
import io.vblk.perf.report.SvgChart;

/** What an invocation collected, and the files it writes at the end (--json, --markdown, --hgrm, --svg). */
final class Outputs {
    final List<BenchResult> results = new ArrayList<>();
    final List<Comparison> comparisons = new ArrayList<>();
    final List<GoalCheck> goals = new ArrayList<>();
    final List<SvgChart.Panel> panels = new ArrayList<>();
    private final BenchOptions options;
    private final List<String> args;
    private final double loadBefore;
    private final String started = Machine.now();

    Outputs(BenchOptions options, List<String> args, double loadBefore) {
        this.options = options;
        this.args = List.copyOf(args);
        this.loadBefore = loadBefore;
    }

    /** The header every report starts with. */
    static void header(PrintStream out, List<String> args, double load) {
        out.printf(Locale.ROOT, "vblk bench  %s%n", Machine.now());
        out.printf(Locale.ROOT, "machine     %s%n", Machine.describe());
        out.printf(Locale.ROOT, "command     vblk bench%s%n", args.isEmpty() ? "" : " " + String.join(" ", args));
        out.printf(Locale.ROOT, "load        %.2f (1-minute average at start)%s%n", load,
                load > 1.5 ? "  -- the machine is busy: figures are under load" : "");
        out.println();
    }

    /** Writes the files asked for; reports each on {@code err}. */
    void write(PrintStream err, String title) throws IOException {
        Map<String, Object> context = Machine.context(args, loadBefore);
        context.put("date", started);
        if (options.json != null) {
            JsonReport.write(options.json, context, results, comparisons, goals);
            err.println("wrote " + options.json);
        }
        if (options.markdown != null) {
            MarkdownReport.write(options.markdown, context, results, comparisons, goals);
            err.println("wrote " + options.markdown);
        }
        if (options.hgrm != null) {
            int n = HgrmFiles.write(options.hgrm, results);
            err.println("wrote " + n + " percentile files to " + options.hgrm);
        }
        if (options.svg != null) {
            List<SvgChart.Panel> chart = panels.isEmpty() ? List.of(new SvgChart.Panel("latency by percentile", results)) : panels;
            SvgChart.write(options.svg, title + "  (" + context.get("date") + ", load " + String.format(Locale.ROOT, "%.2f", loadBefore)
                    + ")", chart);
            err.println("wrote " + options.svg);
        }
    }
}
