package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

import org.agrona.concurrent.SystemNanoClock;
import org.junit.jupiter.api.Test;

import com.lmax.disruptor.BusySpinWaitStrategy;

/**
 * rev14b L3: the dedicated completion thread hands requests back with an ordered store
 * ({@code returned.offer}) and then reads the I/O thread's sleeping mark; the I/O thread marks
 * itself sleeping (volatile) and then re-checks {@code hasReturns()}. Without a full fence between
 * the store and the read on the completion side (a batch of lost requests, or of a quarantined
 * queue's, has no used.idx publish and so no fence), the store can still sit in the store buffer
 * when the mark is read: each side misses the other and the I/O thread sleeps with a request to
 * reclaim. The route now fences once per batch before the wake-up.
 *
 * <p>The race cannot be forced deterministically (a store-buffer window of nanoseconds): this is
 * a stress loop of the sleep protocol against the real route, with the I/O thread's side played
 * by the test (its mark, re-check and wake-up semaphore as in {@link AbstractThreadWait}). Before
 * the fence it lost a wake-up twice in two runs (after about 230,000 rounds, 5 s, each); with it,
 * none in 1.6 million rounds (30 s). A wake-up that merely comes late (a preempted completion
 * thread) is not counted.
 */
class DedicatedReturnWakeStressTest {
    private static final long RUN_NS = TimeUnit.SECONDS.toNanos(8);

    private volatile boolean sleeping;

    @Test
    void noReturnedRequestIsLeftWithTheIoThreadAsleep() throws Exception {
        RequestPool pool = new RequestPool(1, 4);
        CompletionPath completions = new CompletionPath(1, false, SystemNanoClock.INSTANCE);
        Semaphore wakeup = new Semaphore(0);
        DedicatedCompletionRoute route = new DedicatedCompletionRoute(pool, completions, new DeviceQueue[0], 8,
                new BusySpinWaitStrategy(), r -> { }, () -> {
                    if (sleeping) {
                        wakeup.release();
                    }
                });
        route.start("return-wake");
        BlkRequest r = pool.claim();
        int lost = 0;
        long rounds = 0;
        try {
            long end = System.nanoTime() + RUN_NS;
            while (System.nanoTime() < end && lost == 0) {
                rounds++;
                r.stage = BlkRequest.LOST; // its completion only hands the slot back (no guest memory)
                route.completeImmediately(r);
                for (int spin = ThreadLocalRandom.current().nextInt(200); spin > 0; spin--) {
                    Thread.onSpinWait(); // land the mark anywhere around the completion thread's hand-back
                }
                sleeping = true;
                if (!route.hasReturns() && !wakeup.tryAcquire(20, TimeUnit.MILLISECONDS) && route.hasReturns()
                        && !wakeup.tryAcquire(2, TimeUnit.SECONDS)) {
                    lost++; // asleep with the request handed back, and no wake-up came (not merely a late one)
                }
                sleeping = false;
                wakeup.drainPermits();
                while (route.reclaim() == 0) {
                    Thread.onSpinWait();
                }
            }
        } finally {
            route.close();
        }
        System.out.println("return-wake stress: " + rounds + " rounds, " + lost + " lost wake-ups");
        assertEquals(0, lost, "a returned request was left with the I/O thread asleep after " + rounds + " rounds");
    }
}
