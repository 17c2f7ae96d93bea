package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.HdrHistogram.Histogram;
import org.junit.jupiter.api.Test;

/** A queue's latency summary says what a copy of its histogram says, and sees later records. */
class LatencySummaryTest {
    @Test
    void theSummaryReadInPlaceMatchesACopy() {
        DeviceQueue q = new DeviceQueue(0, 16);
        for (long ns = 1_000; ns <= 1_000_000; ns += 997) {
            q.recordLatency(ns);
        }
        q.recordLatency(5_000_000_000L);
        assertSame(q.latency(), q.latencySummary());

        q.recordLatency(7_000_000_000L);
        LatencySummary later = q.latencySummary();
        assertEquals(1_005, later.count());
        assertSame(q.latency(), later);

        q.resetLatency();
        assertEquals(0, q.latencySummary().count());
    }

    private static void assertSame(Histogram copy, LatencySummary s) {
        assertEquals(copy.getTotalCount(), s.count());
        assertEquals(copy.getMean(), s.meanNs());
        assertEquals(copy.getMaxValue(), s.maxNs());
        assertEquals(copy.getValueAtPercentile(50), s.p50Ns());
        assertEquals(copy.getValueAtPercentile(99), s.p99Ns());
        assertEquals(copy.getValueAtPercentile(99.9), s.p999Ns());
    }
}
