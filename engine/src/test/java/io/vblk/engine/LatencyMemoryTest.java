package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * A queue's latency histograms are small (an idle export's memory was mostly four 208 KiB
 * histograms a queue) and still read its percentiles to 1%.
 */
class LatencyMemoryTest {
    @Test
    void aQueuesHistogramIsAFewTensOfKibibytes() {
        DeviceQueue q = new DeviceQueue(0, 16);
        long bytes = q.latency().getEstimatedFootprintInBytes();
        // four of these a queue (the recorder's two, the interval, the total)
        assertTrue(bytes <= 40 * 1024, "one latency histogram takes " + bytes + " bytes");
    }

    @Test
    void percentilesStayWithinOnePercent() {
        DeviceQueue q = new DeviceQueue(0, 16);
        for (long ns = 10_000; ns <= 1_000_000; ns += 10) {
            q.recordLatency(ns);
        }
        q.recordLatency(30_000_000_000L);
        LatencySummary s = q.latencySummary();
        assertEquals(99_002, s.count());
        assertWithinOnePercent(505_000, s.p50Ns());
        assertWithinOnePercent(990_100, s.p99Ns());
        assertWithinOnePercent(30_000_000_000L, s.maxNs());
    }

    private static void assertWithinOnePercent(long expected, long actual) {
        assertTrue(Math.abs(actual - expected) <= expected / 100, "expected about " + expected + ", got " + actual);
    }
}
