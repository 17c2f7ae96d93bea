package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * A queue's fixed latency buckets count every recorded latency once, in the bucket of its bound,
 * and only grow: a stats reset clears the percentiles, not the buckets.
 */
class LatencyBucketsTest {
    @Test
    void latenciesLandInTheirBucketsAndAResetKeepsThem() {
        long[] bounds = LatencyBuckets.boundsNs();
        assertEquals(10_000L, bounds[0]);
        DeviceQueue q = new DeviceQueue(0, 16);
        q.recordLatency(5_000);            // <= 10 us
        q.recordLatency(20_000, 3);        // <= 25 us
        q.recordLatency(700_000);          // <= 1 ms
        q.recordLatency(59_000_000_000L);  // above 10 s

        LatencyBuckets b = q.latencyBuckets();
        long[] expected = new long[bounds.length + 1];
        expected[0] = 1;
        expected[1] = 3;
        expected[6] = 1;
        expected[bounds.length] = 1;
        assertArrayEquals(expected, b.counts());
        assertEquals(6, b.count());
        long exactSum = 5_000 + 60_000 + 700_000 + 59_000_000_000L;
        assertTrue(Math.abs(b.sumNs() - exactSum) <= exactSum / 100, "sum " + b.sumNs());

        // reading again adds nothing twice; a stats reset forgets the percentiles, not the buckets
        q.latencySummary();
        q.recordLatency(30_000);           // <= 50 us, recorded before the reset
        q.resetLatency();
        assertEquals(0, q.latencySummary().count());
        LatencyBuckets after = q.latencyBuckets();
        expected[2] = 1;
        assertArrayEquals(expected, after.counts());
    }
}
