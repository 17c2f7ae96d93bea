package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;

/**
 * Throttling holds a device to its configured IOPS and bandwidth within 10 % over 5 seconds, by
 * delaying requests (every one completes OK). The null back end is used because the limit, not
 * the disk, must be what slows the guest; the throttle sits above the back end either way.
 */
class ThrottleTest {
    private static final long SECONDS = 5;

    @TempDir
    Path dir;

    /**
     * Issue 10: the byte throttle charges bytes moved, not the length of a DISCARD range. A
     * discard of the whole 64 MiB image under a 1 MiB/s limit used to stall the queue for a
     * minute; now the read after it goes through without being throttled.
     */
    @Test
    void aDiscardIsNotChargedToTheByteLimit() throws Exception {
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).bytesPerSecondLimit(1L << 20).burstMs(100).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.NULL).imageBytes(64L << 20).tuning(tuning).build()) {
            long seg = rig.buffer(0, 16);
            long h = rig.host(seg, 16);
            org.agrona.UnsafeApi.putLong(h, 0);
            org.agrona.UnsafeApi.putInt(h + 8, (int) ((64L << 20) >> 9));
            org.agrona.UnsafeApi.putInt(h + 12, 0);
            assertEquals(S_OK, rig.roundTrip(0, BlkRequestDescriptor.T_DISCARD, 0, seg, 16, false));
            long buf = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            assertEquals(0L, rig.device.counters(0).get(QueueCounters.THROTTLED), "the discard was charged");
        }
    }

    @Test
    void iopsLimitHeldWithinTenPercent() throws Exception {
        long limit = 4_000;
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).iopsLimit(limit).burstMs(20).build();
        double rate = measure(tuning, 4096)[0];
        assertHeld(rate, limit, "IOPS");
    }

    @Test
    void bandwidthLimitHeldWithinTenPercent() throws Exception {
        long limit = 40L << 20; // 40 MiB/s with 64 KiB requests: 640 requests/s
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.ADAPTIVE).bytesPerSecondLimit(limit).burstMs(20).build();
        double bytesPerSecond = measure(tuning, 65536)[1];
        assertHeld(bytesPerSecond, limit, "bytes/s");
    }

    /**
     * The limit holds: never more than 10% above it (the burst allowance). Below it only the
     * machine can push a correct throttle (a loaded CI host starves the guest thread), so the
     * lower bound is loose: it still catches a throttle that over-delays by half or more.
     */
    private static void assertHeld(double rate, long limit, String what) {
        assertTrue(rate <= 1.10 * limit, what + " " + rate + " above limit " + limit);
        assertTrue(rate >= 0.50 * limit, what + " " + rate + " far below limit " + limit);
    }

    /** Drives 32 requests in flight for {@link #SECONDS}; returns {IOPS, bytes/s}. */
    private double[] measure(Tuning tuning, int requestBytes) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.NULL).imageBytes(64L << 20).tuning(tuning).build()) {
            int depth = 32;
            long buf = rig.buffer(0, (long) requestBytes * depth);
            for (int i = 0; i < depth; i++) {
                rig.add(0, T_IN, 0, buf + (long) i * requestBytes, requestBytes, true);
            }
            rig.kick(0);
            long start = System.nanoTime();
            long end = start + SECONDS * 1_000_000_000L;
            long done = 0;
            while (System.nanoTime() < end) {
                int head = rig.awaitUsed(0, 10_000);
                assertEquals(S_OK, rig.status(0, head));
                done++;
                rig.add(0, T_IN, 0, buf, requestBytes, true);
                rig.kick(0);
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            return new double[] {done / seconds, done * (double) requestBytes / seconds};
        }
    }
}
