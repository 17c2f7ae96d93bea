package io.vblk.engine;

import org.HdrHistogram.Histogram;

/**
 * What a queue's latency histogram says, read in place: the count, mean, maximum and the
 * percentiles a scrape or {@code export.stats} shows, in nanoseconds. Reading these instead of a
 * copy of the histogram (about 30 KiB at two significant digits up to its highest value; 208 KiB at three)
 * keeps a metrics flood from turning into garbage that pauses the I/O threads.
 *
 * @param count requests recorded
 * @param meanNs mean latency
 * @param maxNs highest latency recorded
 * @param p50Ns median
 * @param p99Ns 99th percentile
 * @param p999Ns 99.9th percentile
 */
public record LatencySummary(long count, double meanNs, long maxNs, long p50Ns, long p99Ns, long p999Ns) {
    /** The summary of {@code h}, read without copying it. */
    static LatencySummary of(Histogram h) {
        return new LatencySummary(h.getTotalCount(), h.getMean(), h.getMaxValue(),
                h.getValueAtPercentile(50), h.getValueAtPercentile(99), h.getValueAtPercentile(99.9));
    }
}
