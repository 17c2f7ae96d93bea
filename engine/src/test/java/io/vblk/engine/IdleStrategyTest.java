package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;

import org.agrona.concurrent.BackoffIdleStrategy;
import org.agrona.concurrent.BusySpinIdleStrategy;
import org.agrona.concurrent.CachedNanoClock;
import org.agrona.concurrent.YieldingIdleStrategy;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** Each idle strategy's decisions, under an injected clock and a counting kernel sleep. */
class IdleStrategyTest {
    private final CachedNanoClock clock = new CachedNanoClock();
    private int sleeps;
    private final KernelSleep sleeper = () -> sleeps++;

    @Test
    @DisplayName("kernel: sleeps on every idle round, never after work")
    void kernelSleepsWhenIdle() {
        KernelIdleStrategy idle = new KernelIdleStrategy(sleeper);
        idle.idle(3);
        assertEquals(0, sleeps);
        idle.idle(0);
        idle.idle();
        assertEquals(2, sleeps);
    }

    @Test
    @DisplayName("poll-then-sleep: spins for the window after the last work, then sleeps, then polls anew")
    void pollThenSleep() {
        PollThenSleepIdleStrategy idle = new PollThenSleepIdleStrategy(clock, 50_000, sleeper);
        clock.update(1_000_000);
        idle.idle(0);
        clock.advance(49_999);
        idle.idle(0);
        assertEquals(0, sleeps, "inside the window");
        clock.advance(1);
        idle.idle(0);
        assertEquals(1, sleeps, "window over");
        idle.idle(0);
        assertEquals(1, sleeps, "a new window after the sleep");
        clock.advance(40_000);
        idle.idle(2); // work resets the window
        clock.advance(40_000);
        idle.idle(0);
        clock.advance(40_000);
        idle.idle(0);
        assertEquals(1, sleeps, "80 us idle, but only 40 us since the work");
    }

    @Test
    @DisplayName("each wait strategy maps to its Agrona idle strategy")
    void mapping() {
        Tuning.Builder b = Tuning.builder();
        assertInstanceOf(BusySpinIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.BUSY_SPIN).build(), clock, sleeper));
        assertInstanceOf(BackoffIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.YIELDING).build(), clock, sleeper));
        assertInstanceOf(BackoffIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.SLEEPING).build(), clock, sleeper));
        assertInstanceOf(KernelIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.BLOCKING).build(), clock, sleeper));
        assertInstanceOf(PollThenSleepIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.ADAPTIVE).build(), clock, sleeper));
        assertInstanceOf(YieldingIdleStrategy.class,
                IdleStrategies.forSharedThread(WaitStrategy.YIELDING, 0, clock, sleeper));
    }
}
