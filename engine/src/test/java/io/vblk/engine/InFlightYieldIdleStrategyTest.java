package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import org.agrona.concurrent.IdleStrategy;
import org.junit.jupiter.api.Test;

/** The decisions of {@link InFlightYieldIdleStrategy} under an injected clock and in-flight count. */
class InFlightYieldIdleStrategyTest {
    private static final long MAX = 1_000_000L;

    private final AtomicLong now = new AtomicLong(5_000_000L);
    private final AtomicInteger inFlight = new AtomicInteger();
    private final AtomicInteger yields = new AtomicInteger();
    private final CountingStrategy delegate = new CountingStrategy();
    private final InFlightYieldIdleStrategy idle = new InFlightYieldIdleStrategy(delegate, inFlight::get, now::get, MAX,
            yields::incrementAndGet);

    /** What the wrapped strategy was asked. */
    private static final class CountingStrategy implements IdleStrategy {
        int idles;
        int workRounds;
        int resets;

        @Override
        public void idle(int workCount) {
            if (workCount > 0) {
                workRounds++;
            } else {
                idles++;
            }
        }

        @Override
        public void idle() {
            idles++;
        }

        @Override
        public void reset() {
            resets++;
        }
    }

    @Test
    void nothingInFlightGoesStraightToTheWrappedStrategy() {
        idle.idle(0);
        idle.idle(0);
        assertEquals(2, delegate.idles);
        assertEquals(0, yields.get());
    }

    @Test
    void withOperationsInFlightItYieldsUntilTheBoundThenTheWrappedStrategyDecides() {
        inFlight.set(3);
        idle.idle(0);
        now.addAndGet(MAX - 1);
        idle.idle(0);
        assertEquals(2, yields.get(), "yields within the bound");
        assertEquals(0, delegate.idles, "the wrapped strategy (a sleep in the kernel) is not asked while yielding");
        now.addAndGet(1);
        idle.idle(0);
        assertEquals(2, yields.get());
        assertEquals(1, delegate.idles, "past the bound: the wrapped strategy sleeps or polls");
        now.addAndGet(MAX);
        idle.idle(0);
        assertEquals(2, delegate.idles, "still the same idle stretch: no new yielding");
    }

    @Test
    void workStartsANewStretchAndReachesTheWrappedStrategy() {
        inFlight.set(1);
        idle.idle(0);
        now.addAndGet(2 * MAX);
        idle.idle(0);
        assertEquals(1, delegate.idles);
        idle.idle(5);
        assertEquals(1, delegate.workRounds, "work is passed on (an adaptive window resets on it)");
        idle.idle(0);
        assertEquals(2, yields.get(), "a new stretch yields again");
        assertEquals(1, delegate.idles);
    }

    @Test
    void theLastInFlightOperationFinishingEndsTheYielding() {
        inFlight.set(1);
        idle.idle(0);
        inFlight.set(0);
        idle.idle(0);
        assertEquals(1, yields.get());
        assertEquals(1, delegate.idles);
    }

    @Test
    void aZeroBoundNeverYieldsAndResetReachesTheWrappedStrategy() {
        InFlightYieldIdleStrategy off = new InFlightYieldIdleStrategy(delegate, () -> 8, now::get, 0, yields::incrementAndGet);
        off.idle(0);
        off.reset();
        assertEquals(0, yields.get());
        assertEquals(1, delegate.idles);
        assertEquals(1, delegate.resets);
        assertThrows(IllegalArgumentException.class, () -> new InFlightYieldIdleStrategy(delegate, () -> 0, now::get, -1));
    }
}
