package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.BackendKind;

/**
 * rev14b M1: a throttled queue's thread sleeps until the deadline of the limits in force, with
 * the queue's notifications off, so lifting the limits ({@link BlockDevice#setLimits}, the
 * daemon's {@code export.set_limits 0 0}) did not wake it: a request posted meanwhile waited out
 * the old deadline (16 s after a 256 KiB read at 16 KiB/s). setLimits now kicks every I/O thread
 * of the device, own or shared. And a raised limit scales down the debt run up under the old one,
 * so the new rate applies from now rather than after the old debt is paid.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class ThrottleLiftWakeTest {
    @TempDir
    Path dir;

    /**
     * 256 KiB at 4 KiB/s: the next request's deadline is 64 s away; once the limit is lifted it
     * is served well before that (the wait allowed, 20 s, is a hang guard, not a speed bound).
     */
    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void liftingTheLimitServesAThrottledQueueAtOnce(boolean sharedThread) throws Exception {
        Tuning.Builder tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).bytesPerSecondLimit(4 * 1024).burstMs(0);
        Tuning slow = (sharedThread ? tuning.threadingMode(ThreadingMode.SHARED) : tuning).build();
        try (SharedIoThread shared = sharedThread ? new SharedIoThread("shared-throttle", WaitStrategy.BLOCKING, 0) : null) {
            DeviceRig.Builder b = DeviceRig.builder(dir, BackendKind.NULL).tuning(slow);
            if (shared != null) {
                b.ioThreads(shared);
            }
            try (DeviceRig a = b.build()) {
                long buf = a.buffer(0, 256 * 1024);
                assertEquals(0, a.roundTrip(0, T_IN, 0, buf, 256 * 1024, true)); // charges 64 s of bytes
                int head = a.add(0, T_IN, 0, buf, 4096, true);
                a.kick(0);
                // The thread finds the queue throttled and sleeps till the deadline.
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (a.device.counters(0).get(QueueCounters.THROTTLED) == 0 && System.nanoTime() < until) {
                    Thread.sleep(10);
                }
                Thread.sleep(200);
                a.device.setLimits(0, 0);
                assertEquals(head, a.awaitUsed(0, 20_000), "served once the limit is lifted, not at the old deadline (64 s)");
            }
        }
    }

    @Test
    void raisingALimitScalesTheDebtToTheNewRate() {
        Throttle t = new Throttle(0, 16 * 1024, 0);
        long now = System.nanoTime();
        t.charge(now, 256 * 1024);
        long before = t.delayNs(now);
        assertTrue(before > TimeUnit.SECONDS.toNanos(15), "16 s owed at 16 KiB/s: " + before);
        t.setLimits(0, 1024 * 1024);
        long after = t.delayNs(System.nanoTime());
        assertTrue(after < TimeUnit.SECONDS.toNanos(1), "at 64 times the rate the debt is 1/64 (250 ms), not 16 s: " + after);
        assertTrue(after > 0, "still owed at the new rate: " + after);
        t.setLimits(0, 512 * 1024);
        assertTrue(t.delayNs(System.nanoTime()) > 0, "a lowered limit keeps the debt");
        t.setLimits(0, 0);
        t.setLimits(0, 16 * 1024);
        assertEquals(0, t.delayNs(System.nanoTime()), "a removed limit forgave the debt: set again, it starts afresh");
    }
}
