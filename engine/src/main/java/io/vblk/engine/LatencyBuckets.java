package io.vblk.engine;

import java.util.Arrays;

import org.HdrHistogram.Histogram;
import org.HdrHistogram.HistogramIterationValue;

/**
 * A queue's request latencies since it was built, counted into fixed buckets: what a Prometheus
 * histogram needs (cumulative counts that only grow, so rates and sums across queues and exports
 * work), unlike the since-start quantiles of {@link LatencySummary}. Filled from the queue's
 * latency recorder when a scrape or stats call reads it, so the data plane does no more work per
 * request. A latency counts in the first bucket whose bound is at least the highest value
 * equivalent to it in the queue's histogram (1% resolution): a bound is exact to within 1%.
 *
 * @param counts requests per bucket, one per {@link #BOUNDS_NS} entry and a last one above them all
 *        (not cumulative)
 * @param sumNs the latencies' sum (each at its histogram value, so within 1%)
 */
public record LatencyBuckets(long[] counts, long sumNs) {
    /** The buckets' upper bounds in nanoseconds (inclusive), 10 us to 10 s. */
    private static final long[] BOUNDS_NS = {
        10_000L, 25_000L, 50_000L, 100_000L, 250_000L, 500_000L,
        1_000_000L, 2_500_000L, 5_000_000L, 10_000_000L, 50_000_000L, 100_000_000L,
        1_000_000_000L, 10_000_000_000L};

    /** The buckets' upper bounds in nanoseconds, without the last one (no bound). */
    public static long[] boundsNs() {
        return BOUNDS_NS.clone();
    }

    /** The requests counted in all buckets. */
    public long count() {
        long n = 0;
        for (long c : counts) {
            n += c;
        }
        return n;
    }

    /** The counts being added to, under the queue's lock. */
    static final class Accumulator {
        private final long[] counts = new long[BOUNDS_NS.length + 1];
        private long sumNs;

        /** Adds what {@code h} recorded (a scrape-time walk over its non-empty entries). */
        void add(Histogram h) {
            if (h.getTotalCount() == 0) {
                return;
            }
            for (HistogramIterationValue v : h.recordedValues()) {
                long value = v.getValueIteratedTo();
                long n = v.getCountAtValueIteratedTo();
                int i = Arrays.binarySearch(BOUNDS_NS, value);
                counts[i >= 0 ? i : -i - 1] += n;
                sumNs += value * n;
            }
        }

        LatencyBuckets snapshot() {
            return new LatencyBuckets(counts.clone(), sumNs);
        }
    }
}
