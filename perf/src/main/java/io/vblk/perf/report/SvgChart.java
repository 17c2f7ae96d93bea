package io.vblk.perf.report;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * {@code --svg FILE}: latency-percentile curves, one panel per group of compared runs, as a
 * self-contained SVG any browser opens. The x axis counts "nines" (0 = 0 %, 1 = 90 %, 2 = 99 %,
 * 3 = 99.9 % ...), so the tail gets as much room as the median; the y axis is logarithmic
 * microseconds.
 */
public final class SvgChart {
    private static final int COLUMNS = 2;
    private static final int PANEL_WIDTH = 640;
    private static final int PLOT_LEFT = 64;
    private static final int PLOT_RIGHT = 40;
    private static final int PLOT_TOP = 34;
    private static final int PLOT_HEIGHT = 250;
    private static final int LEGEND_ROW = 16;
    private static final int TITLE_HEIGHT = 44;
    private static final double MAX_NINES = 6;
    private static final String[] COLORS = {
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
    };

    /** A panel: a title and the runs drawn in it. */
    public record Panel(String title, List<BenchResult> series) {
    }

    private SvgChart() {
    }

    /** Writes the chart with {@code title} on top to {@code file}. */
    public static void write(Path file, String title, List<Panel> panels) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        Files.writeString(file, render(title, panels), StandardCharsets.UTF_8);
    }

    /** The SVG document. */
    public static String render(String title, List<Panel> panels) {
        int columns = Math.min(COLUMNS, Math.max(1, panels.size()));
        List<Integer> heights = new ArrayList<>();
        for (Panel p : panels) {
            heights.add(panelHeight(p));
        }
        int rows = (panels.size() + columns - 1) / columns;
        int[] rowHeight = new int[Math.max(1, rows)];
        for (int i = 0; i < panels.size(); i++) {
            rowHeight[i / columns] = Math.max(rowHeight[i / columns], heights.get(i));
        }
        int width = columns * PANEL_WIDTH;
        int height = TITLE_HEIGHT;
        for (int h : rowHeight) {
            height += h;
        }
        StringBuilder sb = new StringBuilder();
        sb.append("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        sb.append(String.format(Locale.ROOT, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                + "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">\n", width, height, width, height));
        sb.append(String.format(Locale.ROOT, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", width, height));
        sb.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"26\" font-size=\"15\" font-weight=\"bold\">%s</text>\n",
                12, escape(title)));
        int y = TITLE_HEIGHT;
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < columns && r * columns + c < panels.size(); c++) {
                panel(sb, panels.get(r * columns + c), c * PANEL_WIDTH, y);
            }
            y += rowHeight[r];
        }
        sb.append("</svg>\n");
        return sb.toString();
    }

    private static int panelHeight(Panel p) {
        return PLOT_TOP + PLOT_HEIGHT + 40 + LEGEND_ROW * p.series().size() + 16;
    }

    private static void panel(StringBuilder sb, Panel p, int x0, int y0) {
        int plotWidth = PANEL_WIDTH - PLOT_LEFT - PLOT_RIGHT;
        int left = x0 + PLOT_LEFT;
        int top = y0 + PLOT_TOP;
        List<List<double[]>> curves = new ArrayList<>();
        double maxNines = 2;
        double minUs = Double.MAX_VALUE;
        double maxUs = 0;
        for (BenchResult r : p.series()) {
            List<double[]> pts = new ArrayList<>();
            long count = r.latency().count();
            for (double[] pt : r.latency().curve()) {
                double nines = nines(pt[0], count);
                double us = Math.max(0.1, pt[1] / 1e3);
                pts.add(new double[] {nines, us});
                maxNines = Math.max(maxNines, nines);
                minUs = Math.min(minUs, us);
                maxUs = Math.max(maxUs, us);
            }
            curves.add(pts);
        }
        if (maxUs == 0) {
            minUs = 1;
            maxUs = 10;
        }
        maxNines = Math.min(MAX_NINES, Math.ceil(maxNines));
        double lo = Math.floor(Math.log10(minUs));
        double hi = Math.max(lo + 1, Math.ceil(Math.log10(maxUs)));
        sb.append(String.format(Locale.ROOT, "<g>\n<text x=\"%d\" y=\"%d\" font-size=\"13\" font-weight=\"bold\">%s</text>\n",
                x0 + 12, y0 + 20, escape(p.title())));
        sb.append(String.format(Locale.ROOT, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n",
                left, top, plotWidth, PLOT_HEIGHT));
        for (double d = lo; d <= hi + 1e-9; d++) {
            double y = top + PLOT_HEIGHT - (d - lo) / (hi - lo) * PLOT_HEIGHT;
            sb.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                    left, y, left + plotWidth, y));
            sb.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                    left - 6, y + 4, escape(latencyLabel(Math.pow(10, d)))));
        }
        List<double[]> ticks = new ArrayList<>();
        ticks.add(new double[] {0, 0});
        ticks.add(new double[] {Math.log10(2), 50});
        for (int n = 1; n <= maxNines; n++) {
            ticks.add(new double[] {n, 100 - Math.pow(10, 2 - n)});
        }
        for (double[] t : ticks) {
            double x = left + t[0] / maxNines * plotWidth;
            sb.append(String.format(Locale.ROOT, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n",
                    x, top, x, top + PLOT_HEIGHT));
            sb.append(String.format(Locale.ROOT, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                    x, top + PLOT_HEIGHT + 14, escape(percentLabel(t[1]))));
        }
        sb.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">percentile</text>\n",
                left + plotWidth / 2, top + PLOT_HEIGHT + 30));
        sb.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 %d %d)\">"
                + "latency</text>\n", x0 + 14, top + PLOT_HEIGHT / 2, x0 + 14, top + PLOT_HEIGHT / 2));
        for (int i = 0; i < curves.size(); i++) {
            String color = COLORS[i % COLORS.length];
            StringBuilder points = new StringBuilder();
            for (double[] pt : curves.get(i)) {
                double x = left + Math.min(pt[0], maxNines) / maxNines * plotWidth;
                double y = top + PLOT_HEIGHT - (Math.log10(pt[1]) - lo) / (hi - lo) * PLOT_HEIGHT;
                points.append(String.format(Locale.ROOT, "%.1f,%.1f ", x, y));
            }
            sb.append(String.format(Locale.ROOT, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"%s\"/>\n",
                    color, points.toString().trim()));
            BenchResult r = p.series().get(i);
            int ly = top + PLOT_HEIGHT + 44 + i * LEGEND_ROW;
            sb.append(String.format(Locale.ROOT, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"%s\"/>\n", left, ly - 5, color));
            sb.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\">%s</text>\n", left + 20, ly,
                    escape(String.format(Locale.ROOT, "%s: %,.0f IOPS, p50 %.1f us, p99 %.1f us, p99.9 %.1f us", r.name(), r.iops(),
                            r.latencyUs(50), r.latencyUs(99), r.latencyUs(99.9)))));
        }
        sb.append("</g>\n");
    }

    /** Percentile (0-100) to nines; 100 % maps to the resolution the sample count gives. */
    private static double nines(double percentile, long count) {
        double tail = 1 - percentile / 100;
        if (tail <= 0) {
            return count > 1 ? Math.min(MAX_NINES, Math.log10(count)) : MAX_NINES;
        }
        return Math.min(MAX_NINES, -Math.log10(tail));
    }

    private static String latencyLabel(double us) {
        if (us >= 1_000_000) {
            return String.format(Locale.ROOT, "%.0f s", us / 1e6);
        }
        if (us >= 1000) {
            return String.format(Locale.ROOT, "%.0f ms", us / 1e3);
        }
        if (us >= 1) {
            return String.format(Locale.ROOT, "%.0f us", us);
        }
        return String.format(Locale.ROOT, "%.1f us", us);
    }

    private static String percentLabel(double p) {
        if (p == Math.rint(p)) {
            return String.format(Locale.ROOT, "%.0f%%", p);
        }
        String s = String.format(Locale.ROOT, "%.6f", p).replaceAll("0+$", "");
        return s + "%";
    }

    private static String escape(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
    }
}
