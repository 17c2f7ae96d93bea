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

    /** Time the fake kernel sleep takes: the clock moves on by this much while "asleep". */
    private long sleepTakesNs;
    private final KernelSleep timedSleeper = () -> {
        sleeps++;
        clock.advance(sleepTakesNs);
    };

    private AdaptivePollIdleStrategy adaptive(long initialNs, long maxNs) {
        return new AdaptivePollIdleStrategy(clock, initialNs, maxNs, timedSleeper);
    }

    /** Idle rounds every {@code stepNs} for {@code totalNs} (no work). */
    private void idleFor(AdaptivePollIdleStrategy idle, long totalNs, long stepNs) {
        for (long t = 0; t < totalNs; t += stepNs) {
            idle.idle(0);
            clock.advance(stepNs);
        }
    }

    @Test
    @DisplayName("adaptive: spins for the window after the last work, then sleeps; work restarts the window")
    void adaptivePollsThenSleeps() {
        AdaptivePollIdleStrategy idle = adaptive(50_000, 100_000);
        clock.update(1_000_000);
        idle.idle(0);
        clock.advance(10_000);
        idle.idle(0);
        clock.advance(39_999);
        idle.idle(0);
        assertEquals(0, sleeps, "inside the window");
        clock.advance(1);
        idle.idle(0);
        assertEquals(1, sleeps, "window over");
        idle.idle(0);
        assertEquals(1, sleeps, "a new window after the sleep");
        idleFor(idle, 40_000, 2_000);
        idle.idle(2); // work: the window caught it, and the next idle round starts a new one
        idleFor(idle, 40_000, 2_000);
        assertEquals(1, sleeps, "80 us idle, but only 40 us since the work");
        assertEquals(50_000, idle.windowNs(), "a window that caught the work stays as it is");
    }

    @Test
    @DisplayName("adaptive: a wake-up soon after the window grows it (doubling, from 4 us), up to the maximum")
    void adaptiveGrows() {
        AdaptivePollIdleStrategy idle = adaptive(0, 60_000);
        sleepTakesNs = 20_000; // woken 20 us after the window: within the maximum
        idle.idle(0);
        assertEquals(1, sleeps, "no window yet: straight to the kernel");
        assertEquals(AdaptivePollIdleStrategy.GROW_START_NS, idle.windowNs());
        long[] expected = {8_000, 16_000, 32_000, 60_000};
        for (long w : expected) {
            idleFor(idle, idle.windowNs() + 2_000, 2_000);
            assertEquals(w, idle.windowNs());
        }
        assertEquals(5, idle.grows());
        assertEquals(60_000, idle.windowNs(), "no growth past the maximum");
    }

    @Test
    @DisplayName("adaptive: waits longer than the maximum shrink the window (halving) down to no polling")
    void adaptiveShrinks() {
        AdaptivePollIdleStrategy idle = adaptive(32_000, 100_000);
        sleepTakesNs = 5_000_000; // an idle guest
        long[] expected = {16_000, 8_000, 4_000, 0, 0};
        for (long w : expected) {
            idleFor(idle, idle.windowNs() + 2_000, 2_000);
            assertEquals(w, idle.windowNs());
        }
        int before = sleeps;
        idle.idle(0);
        assertEquals(before + 1, sleeps, "window 0: sleeps on the first idle round");
    }

    @Test
    @DisplayName("adaptive: a long gap between idle rounds (the core was taken) shuts the window, sleeps at once, "
            + "and keeps it shut for the back-off")
    void adaptiveGivesTheCoreAwayWhenPreempted() {
        AdaptivePollIdleStrategy idle = adaptive(80_000, 100_000);
        idle.idle(0);
        clock.advance(2_000);
        idle.idle(0);
        clock.advance(AdaptivePollIdleStrategy.PREEMPTED_GAP_NS + 1);
        idle.idle(0);
        assertEquals(1, idle.preemptions());
        assertEquals(1, sleeps, "slept instead of polling on for the rest of the window");
        assertEquals(0, idle.windowNs());
        sleepTakesNs = 10_000; // woken soon: would grow the window, but the core was contended
        idle.idle(0);
        assertEquals(2, sleeps);
        assertEquals(0, idle.windowNs(), "no growth during the back-off");
        clock.advance(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS);
        idle.idle(0);
        assertEquals(3, sleeps);
        assertEquals(AdaptivePollIdleStrategy.GROW_START_NS, idle.windowNs(), "grows again after it");
        assertEquals(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());

        // Preempted again soon after the back-off ended: steady competition, the back-off doubles.
        idle.idle(0);
        clock.advance(AdaptivePollIdleStrategy.PREEMPTED_GAP_NS + 1);
        idle.idle(0);
        assertEquals(2, idle.preemptions());
        assertEquals(2 * AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
        assertEquals(0, idle.windowNs());
    }

    @Test
    @DisplayName("adaptive with a maximum of 0 never polls: it blocks like the kernel strategy")
    void adaptiveMaxZero() {
        AdaptivePollIdleStrategy idle = adaptive(50_000, 0);
        sleepTakesNs = 10_000;
        idle.idle(0);
        idle.idle(0);
        assertEquals(2, sleeps);
        assertEquals(0, idle.windowNs());
        assertEquals(0, idle.grows());
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
        assertInstanceOf(AdaptivePollIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.ADAPTIVE).build(), clock, sleeper));
        assertInstanceOf(YieldingIdleStrategy.class,
                IdleStrategies.forSharedThread(WaitStrategy.YIELDING, 0, clock, sleeper));
    }
}
