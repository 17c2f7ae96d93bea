package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.agrona.concurrent.SystemNanoClock;
import org.junit.jupiter.api.Test;

import com.lmax.disruptor.BlockingWaitStrategy;

/**
 * rev14b L2: the dedicated completion thread wakes the I/O thread at the end of each batch, from
 * inside the event handler, before the Disruptor's processor advances its sequence; a command
 * woken to wait for a fence (an interrupt swap, a data-path pass) found it not passed and backed
 * off for up to 100 ms. The route now records the batch's last sequence before the wake-up, and
 * {@link DedicatedCompletionRoute#passed} reads it. Deterministic: the wake-up itself asks.
 */
class DedicatedFenceWakeTest {
    @Test
    void aFenceIsPassedWhenItsBatchWakesTheIoThread() throws Exception {
        RequestPool pool = new RequestPool(4, 4);
        CompletionPath completions = new CompletionPath(1, false, SystemNanoClock.INSTANCE);
        DedicatedCompletionRoute[] route = new DedicatedCompletionRoute[1];
        CompletableFuture<Boolean> passedAtWake = new CompletableFuture<>();
        route[0] = new DedicatedCompletionRoute(pool, completions, new DeviceQueue[0], 8, new BlockingWaitStrategy(),
                r -> { }, () -> passedAtWake.complete(route[0].passed(0)));
        route[0].start("fence-wake");
        try {
            assertEquals(0, route[0].fence(), "the first sequence");
            assertTrue(passedAtWake.get(10, TimeUnit.SECONDS), "the batch that woke the I/O thread holds the fence: passed");
            assertTrue(route[0].passed(0));
        } finally {
            route[0].close();
        }
    }
}
