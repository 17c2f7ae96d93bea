package io.vblk.perf.report;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.HdrHistogram.Histogram;
import org.HdrHistogram.HistogramIterationValue;

/**
 * A run's latency distribution in nanoseconds: a full HdrHistogram for runs this process
 * measured, or the percentile points a foreign tool (fio) reported.
 */
public final class Latency {
    private final Histogram histogram;
    private final TreeMap<Double, Long> points;
    private final long maxNs;

    private Latency(Histogram histogram, TreeMap<Double, Long> points, long maxNs) {
        this.histogram = histogram;
        this.points = points;
        this.maxNs = maxNs;
    }

    /** A distribution backed by {@code histogram} (not copied: do not record into it afterwards). */
    public static Latency of(Histogram histogram) {
        return new Latency(histogram, null, histogram.getMaxValue());
    }

    /** A distribution known only at {@code points} (percentile, 0-100, to ns) and its maximum. */
    public static Latency ofPoints(Map<Double, Long> points, long maxNs) {
        return new Latency(null, new TreeMap<>(points), maxNs);
    }

    /** The histogram, or null when only points are known. */
    public Histogram histogram() {
        return histogram;
    }

    /** The latency at {@code percentile} (0-100), ns; for points, the nearest reported one at or above. */
    public long atPercentile(double percentile) {
        if (histogram != null) {
            return histogram.getValueAtPercentile(percentile);
        }
        Map.Entry<Double, Long> e = points.ceilingEntry(percentile - 1e-9);
        return e == null ? maxNs : e.getValue();
    }

    /** The largest latency, ns. */
    public long maxNs() {
        return maxNs;
    }

    /** Samples behind the distribution, or -1 when unknown. */
    public long count() {
        return histogram == null ? -1 : histogram.getTotalCount();
    }

    /**
     * The percentile curve as (percentile, ns) pairs for a chart: the histogram's own iteration
     * (denser toward the tail), or the reported points.
     */
    public List<double[]> curve() {
        List<double[]> out = new ArrayList<>();
        if (histogram != null) {
            if (histogram.getTotalCount() == 0) {
                return out;
            }
            for (HistogramIterationValue v : histogram.percentiles(5)) {
                out.add(new double[] {v.getPercentileLevelIteratedTo(), histogram.highestEquivalentValue(v.getValueIteratedTo())});
            }
        } else {
            for (Map.Entry<Double, Long> e : points.entrySet()) {
                out.add(new double[] {e.getKey(), e.getValue()});
            }
        }
        return out;
    }

    /**
     * Several runs' distributions as one: histograms added, or points averaged percentile by
     * percentile (an approximation, marked as such by the absence of a histogram).
     */
    public static Latency merge(List<Latency> parts) {
        if (parts.size() == 1) {
            return parts.get(0);
        }
        boolean allHistograms = parts.stream().allMatch(p -> p.histogram != null);
        long max = parts.stream().mapToLong(Latency::maxNs).max().orElse(0);
        if (allHistograms) {
            Histogram sum = parts.get(0).histogram.copy();
            for (int i = 1; i < parts.size(); i++) {
                sum.add(parts.get(i).histogram);
            }
            return of(sum);
        }
        TreeMap<Double, Long> avg = new TreeMap<>();
        for (double p : parts.get(0).pointsOrDefault().keySet()) {
            long total = 0;
            for (Latency l : parts) {
                total += l.atPercentile(p);
            }
            avg.put(p, total / parts.size());
        }
        return ofPoints(avg, max);
    }

    private Map<Double, Long> pointsOrDefault() {
        if (points != null) {
            return points;
        }
        TreeMap<Double, Long> m = new TreeMap<>();
        for (double p : new double[] {50, 90, 99, 99.9, 99.99}) {
            m.put(p, atPercentile(p));
        }
        return m;
    }
}
