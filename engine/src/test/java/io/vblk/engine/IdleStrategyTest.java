package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.agrona.concurrent.BackoffIdleStrategy;
import org.agrona.concurrent.BusySpinIdleStrategy;
import org.agrona.concurrent.CachedNanoClock;
import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.YieldingIdleStrategy;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import static io.vblk.engine.AdaptivePollIdleStrategy.LOST_SHARE_CONTENDED;

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

    /**
     * {@code n} I/Os at depth 1, the next request {@code gapNs} after each poll window starts;
     * every {@code preemptedEvery} windows (0: never) the core is taken for {@code lostNs} in the
     * middle of the window, a gap between two idle rounds.
     */
    private void iosWithGaps(AdaptivePollIdleStrategy idle, int n, long gapNs, int preemptedEvery, long lostNs) {
        for (int i = 1; i <= n; i++) {
            idle.idle(0);
            clock.advance(gapNs / 2);
            idle.idle(0);
            if (preemptedEvery > 0 && i % preemptedEvery == 0) {
                clock.advance(lostNs);
                idle.idle(0);
            }
            clock.advance(gapNs - gapNs / 2);
            idle.idle(1);
        }
    }

    @Test
    @DisplayName("adaptive: the core taken now and then while polling (JIT, GC, another process's burst) does not stop polling")
    void adaptiveKeepsPollingThroughOccasionalPreemption() {
        AdaptivePollIdleStrategy idle = adaptive(50_000, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 5_000; // a kick wakes the thread 5 us into a kernel sleep
        // 2 us per I/O (1 us of it polling); every 10,000 I/Os (20 ms) a 3 ms preemption: a
        // thread that runs an eighth of the time, now and then, on a machine otherwise idle.
        for (int burst = 0; burst < 20; burst++) {
            iosWithGaps(idle, 4_999, 2_000, 0, 0);
            iosWithGaps(idle, 1, 2_000, 1, 3_000_000);
            iosWithGaps(idle, 5_000, 2_000, 0, 0);
        }
        assertEquals(20, idle.gaps());
        assertEquals(0, idle.preemptions(), "share " + idle.lostShare());
        assertEquals(40, sleeps, "each gap hands the core over for its wait and the next (window 0), no more: the window regrows at once");
        assertTrue(idle.windowNs() >= AdaptivePollIdleStrategy.GROW_START_NS, "window " + idle.windowNs());
    }

    @Test
    @DisplayName("adaptive: the core taken half the time while polling (two busy loops on two cores) shuts the window, "
            + "sleeps at once, and keeps it shut for a back-off that doubles while the competition stays")
    void adaptiveGivesTheCoreAwayWhenPreemptedForGood() {
        AdaptivePollIdleStrategy idle = adaptive(80_000, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 5_000;
        // A third of the time lost (one competing thread): polling still pays, it goes on.
        iosWithGaps(idle, 3_000, 10_000, 100, 500_000);
        assertEquals(0, idle.preemptions(), "share " + idle.lostShare());
        assertTrue(idle.lostShare() > 0.25 && idle.lostShare() < LOST_SHARE_CONTENDED, "share " + idle.lostShare());
        // Half of it lost: within about the averaging time polling stops.
        int before = sleeps;
        long from = clock.nanoTime();
        while (idle.preemptions() == 0 && clock.nanoTime() - from < 5 * AdaptivePollIdleStrategy.LOST_TAU_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(1, idle.preemptions());
        assertTrue(clock.nanoTime() - from < 3 * AdaptivePollIdleStrategy.LOST_TAU_NS, "took " + (clock.nanoTime() - from));
        assertEquals(1, idle.lostSamples());
        assertEquals(0, idle.windowNs());
        assertTrue(sleeps > before, "slept instead of polling on");
        assertEquals(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
        assertEquals(AdaptivePollIdleStrategy.LOST_SHARE_AFTER_BACKOFF, idle.lostShare(), 1e-9);

        sleepTakesNs = 10_000; // woken soon: would grow the window, but polling was contended
        int sleptAt = sleeps;
        idle.idle(0);
        idle.idle(1);
        assertEquals(sleptAt + 1, sleeps);
        assertEquals(0, idle.windowNs(), "no growth during the back-off");
        clock.advance(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS);
        idle.idle(0);
        assertEquals(AdaptivePollIdleStrategy.GROW_START_NS, idle.windowNs(), "grows again after it");
        while (idle.windowNs() < 16_000) {
            idle.idle(0);
            clock.advance(idle.windowNs() + 1_000);
            idle.idle(0);
        }
        // Still half the time lost right after the back-off: stops again soon, and the back-off doubles.
        long polledFrom = clock.nanoTime();
        while (idle.preemptions() == 1 && clock.nanoTime() - polledFrom < 5 * AdaptivePollIdleStrategy.LOST_TAU_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(2, idle.preemptions());
        assertTrue(clock.nanoTime() - polledFrom < 2 * AdaptivePollIdleStrategy.LOST_TAU_NS,
                "stopped again within " + (clock.nanoTime() - polledFrom) + " ns of polling");
        assertEquals(2 * AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
        assertEquals(0, idle.windowNs());
    }

    @Test
    @DisplayName("adaptive: after a back-off, polling that finds the core free again keeps going and the share decays")
    void adaptiveResumesWhenTheCompetitionLeaves() {
        AdaptivePollIdleStrategy idle = adaptive(16_000, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 5_000;
        for (int i = 0; i < 100 && idle.preemptions() == 0; i++) {
            iosWithGaps(idle, 50, 10_000, 25, 1_000_000); // 80% lost
        }
        assertEquals(1, idle.preemptions());
        clock.advance(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS);
        sleepTakesNs = 10_000;
        while (idle.windowNs() < 16_000) {
            idle.idle(0);
            clock.advance(idle.windowNs() + 1_000);
            idle.idle(0);
        }
        int sleptAt = sleeps;
        iosWithGaps(idle, 10_000, 10_000, 0, 0); // 100 ms, the core to itself
        assertEquals(1, idle.preemptions());
        assertEquals(sleptAt, sleeps);
        assertTrue(idle.lostShare() < 0.05, "share " + idle.lostShare());
    }

    /**
     * I/Os through a back-off, each a kernel sleep of {@code sleepTakesNs} ended by the guest's
     * kick, until the window opens again after it; returns how long that took.
     */
    private long blockingIos(AdaptivePollIdleStrategy idle) {
        long from = clock.nanoTime();
        for (int i = 0; i < 1_000_000 && idle.windowNs() == 0; i++) {
            idle.idle(0);
            idle.idle(1);
        }
        return clock.nanoTime() - from;
    }

    /** Regrows a shut window with waits that end 1 us after it, up to {@code ns}. */
    private void regrow(AdaptivePollIdleStrategy idle, long ns) {
        for (int i = 0; i < 100 && idle.windowNs() < ns; i++) {
            idle.idle(0);
            clock.advance(idle.windowNs() + 1_000);
            idle.idle(0);
        }
    }

    @Test
    @DisplayName("adaptive: polling that loses half its core yet serves the guest faster than the back-off's blocking did "
            + "(a polling guest and two busy loops on two cores) goes on polling; the rate is measured again after a while")
    void adaptiveKeepsContendedPollingThatServesFasterThanBlocking() {
        AdaptivePollIdleStrategy idle = adaptive(16_000, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 5_000;
        // Half of the polling time lost: polling stops for a back-off, which measures blocking.
        for (int i = 0; i < 1_000 && idle.preemptions() == 0; i++) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000); // 50 requests in about 1 ms
        }
        assertEquals(1, idle.preemptions());
        // Blocking, each request costs a 40 us wake-up (the guest is on its core only half of the time).
        sleepTakesNs = 40_000;
        assertTrue(blockingIos(idle) <= AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS + 40_000, "the back-off's length");
        assertEquals(AdaptivePollIdleStrategy.GROW_START_NS, idle.windowNs(), "polling again after the back-off");
        sleepTakesNs = 5_000;
        regrow(idle, 16_000);
        assertEquals(1.0, idle.blockRate() * 40_000, 0.05, "one request per 40 us while blocking");

        // Still half of it lost, but 50 requests a millisecond against 25 blocking: polling goes on.
        long from = clock.nanoTime();
        while (clock.nanoTime() - from < 10 * AdaptivePollIdleStrategy.LOST_TAU_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(1, idle.preemptions(), "share " + idle.lostShare() + ", poll rate " + idle.pollRate());
        assertTrue(idle.paidContendedSamples() > 0, "contention was found, and polling paid");
        assertTrue(idle.pollRate() >= AdaptivePollIdleStrategy.POLL_PAYS_FACTOR * idle.blockRate(), "poll rate " + idle.pollRate());

        // The back-off's rate stands for a while: then contention backs off once more (no doubling) to measure again.
        while (idle.preemptions() == 1 && clock.nanoTime() - from < 2 * AdaptivePollIdleStrategy.BLOCK_RATE_TTL_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(2, idle.preemptions());
        assertTrue(clock.nanoTime() - from >= AdaptivePollIdleStrategy.BLOCK_RATE_TTL_NS - 20 * AdaptivePollIdleStrategy.LOST_TAU_NS,
                "stopped after " + (clock.nanoTime() - from));
        assertEquals(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
        assertEquals(0, idle.windowNs());

        // This time blocking serves as fast (a 10 us wake-up a request): contention stops polling, and the back-off doubles.
        sleepTakesNs = 10_000;
        assertTrue(blockingIos(idle) <= AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS + 10_000, "the back-off's length");
        sleepTakesNs = 5_000;
        regrow(idle, 16_000);
        assertEquals(1.0, idle.blockRate() * 10_000, 0.05);
        long polledFrom = clock.nanoTime();
        while (idle.preemptions() == 2 && clock.nanoTime() - polledFrom < 5 * AdaptivePollIdleStrategy.LOST_TAU_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(3, idle.preemptions());
        assertEquals(2 * AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
    }

    @Test
    @DisplayName("adaptive: after a back-off that measured blocking, polling is judged over a trial of its own, not one "
            + "sample: a first millisecond in which the scheduler took the cores does not stop polling that pays over the trial")
    void adaptiveJudgesPollingOverATrialAfterTheBackoff() {
        AdaptivePollIdleStrategy idle = adaptive(16_000, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 5_000;
        for (int i = 0; i < 1_000 && idle.preemptions() == 0; i++) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(1, idle.preemptions());
        sleepTakesNs = 40_000; // blocking: a request per 40 us
        blockingIos(idle);
        sleepTakesNs = 5_000;
        regrow(idle, 16_000);
        assertTrue(idle.pollTrial(), "the back-off measured blocking (block rate " + idle.blockRate() + "): polling is on trial");
        // The first 3 ms: the I/O thread loses 150 us of every window (the busy loops hold both
        // cores), a request per 160 us, far slower than blocking; then 50 requests a millisecond.
        long from = clock.nanoTime();
        iosWithGaps(idle, 20, 10_000, 1, 150_000);
        assertEquals(1, idle.preemptions(), "a slow first stretch does not stop polling on trial");
        assertTrue(idle.trialContendedSamples() > 0, "the slow stretch was found contended");
        while (clock.nanoTime() - from < 5 * AdaptivePollIdleStrategy.POLL_TRIAL_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertFalse(idle.pollTrial(), "the trial ended");
        assertEquals(1, idle.preemptions(), "over the trial polling served 1.5x blocking's rate or more: it goes on; poll rate "
                + idle.pollRate() + ", block rate " + idle.blockRate());
        assertTrue(idle.paidContendedSamples() > 0);

        // Blocking as fast as polling (a 10 us wake-up): the trial ends with polling stopped, and the back-off doubles.
        while (idle.preemptions() == 1 && clock.nanoTime() - from < 2 * AdaptivePollIdleStrategy.BLOCK_RATE_TTL_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(2, idle.preemptions(), "the block rate's time to live: measured again");
        sleepTakesNs = 10_000;
        blockingIos(idle);
        sleepTakesNs = 5_000;
        regrow(idle, 16_000);
        long trialFrom = clock.nanoTime();
        while (idle.preemptions() == 2 && clock.nanoTime() - trialFrom < 5 * AdaptivePollIdleStrategy.POLL_TRIAL_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(3, idle.preemptions());
        long took = clock.nanoTime() - trialFrom;
        assertTrue(took >= AdaptivePollIdleStrategy.POLL_TRIAL_NS && took < 2 * AdaptivePollIdleStrategy.POLL_TRIAL_NS,
                "stopped within a few samples of the trial's end: " + took);
        assertEquals(2 * AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
    }

    @Test
    @DisplayName("adaptive: with the rate comparison off (the default) nothing measures rates: a contended back-off "
            + "and polling after it leave both rates unmeasured, and contention stops polling as before")
    void adaptiveWithoutRateComparisonKeepsNoRates() {
        AdaptivePollIdleStrategy idle = adaptive(16_000, 100_000).comparingRates(false);
        clock.update(1_000_000);
        sleepTakesNs = 5_000;
        for (int i = 0; i < 1_000 && idle.preemptions() == 0; i++) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertEquals(1, idle.preemptions());
        sleepTakesNs = 40_000;
        blockingIos(idle);
        sleepTakesNs = 5_000;
        regrow(idle, 16_000);
        long from = clock.nanoTime();
        while (idle.preemptions() == 1 && clock.nanoTime() - from < 5 * AdaptivePollIdleStrategy.LOST_TAU_NS) {
            iosWithGaps(idle, 50, 10_000, 50, 500_000);
        }
        assertTrue(Double.isNaN(idle.blockRate()), "block rate " + idle.blockRate());
        assertTrue(Double.isNaN(idle.pollRate()), "poll rate " + idle.pollRate());
        assertEquals(2, idle.preemptions(), "polling that served twice as fast still stops: the rule is off");
        assertEquals(0, idle.paidContendedSamples());
        assertEquals(2 * AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
    }

    /** The thread's involuntary context switches, as the fake getrusage reports them, and how often it was read. */
    private long involuntary;
    private int switchReads;

    private AdaptivePollIdleStrategy adaptiveCountingSwitches(long initialNs, long maxNs) {
        return new AdaptivePollIdleStrategy(clock, initialNs, maxNs, timedSleeper, () -> {
            switchReads++;
            return involuntary;
        });
    }

    /**
     * {@code n} I/Os at depth 1: a poll window starts, the next request arrives {@code gapNs} later
     * and the poll catches it; {@code preemptedEvery} > 0: every that many windows the scheduler
     * took the core once meanwhile (an involuntary switch too short to leave a gap).
     */
    private void ios(AdaptivePollIdleStrategy idle, int n, long gapNs, int preemptedEvery) {
        for (int i = 1; i <= n; i++) {
            idle.idle(0);
            clock.advance(gapNs);
            if (preemptedEvery > 0 && i % preemptedEvery == 0) {
                involuntary++;
            }
            idle.idle(1);
        }
    }

    @Test
    @DisplayName("adaptive: poll windows the scheduler keeps cutting short (involuntary switches, no visible gap) shut "
            + "the window and back off; switches are read once per sample, never per request")
    void adaptiveYieldsWhenItsPollsArePreempted() {
        AdaptivePollIdleStrategy idle = adaptiveCountingSwitches(50_000, 100_000);
        clock.update(1_000_000);
        ios(idle, 200, 12_000, 0); // 2.4 ms of I/Os, the core to itself
        assertEquals(0, sleeps, "every poll caught its request");
        assertEquals(50_000, idle.windowNs());
        assertEquals(0, idle.preemptions());
        assertTrue(switchReads <= 4, "one read per sample of >= 1 ms, not per window: " + switchReads);

        ios(idle, 100, 12_000, 1); // now every window is preempted by the guest it woke
        assertEquals(1, idle.contendedSamples());
        assertEquals(1, idle.preemptions());
        assertEquals(0, idle.windowNs(), "polling stopped");
        assertEquals(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
        int sleptAt = sleeps;
        assertTrue(sleptAt >= 1);

        // Blocking through the back-off: each wake-up 12 us after the sleep would grow the window, but not now.
        sleepTakesNs = 12_000;
        for (int i = 0; i < 100; i++) {
            idle.idle(0);
            idle.idle(1);
        }
        assertEquals(sleptAt + 100, sleeps, "sleeps in the kernel on every idle round");
        assertEquals(0, idle.windowNs());
        int readsWhileBlocking = switchReads;
        idle.idle(0);
        assertEquals(readsWhileBlocking, switchReads, "no switch reads while the window is shut");

        // After the back-off (the guest's requests go on, one a 12 us wake-up: blocking serves
        // them as fast as polling did, so polling does not pay for its contention), polling comes
        // back (QEMU's grow) and is measured again.
        long blockedFrom = clock.nanoTime();
        while (idle.windowNs() == 0) {
            idle.idle(0);
            idle.idle(1);
        }
        assertTrue(clock.nanoTime() - blockedFrom < AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, "took " + (clock.nanoTime() - blockedFrom));
        assertEquals(AdaptivePollIdleStrategy.GROW_START_NS, idle.windowNs(), "grows again after the back-off");
        for (int i = 0; i < 3; i++) { // 4 -> 8 -> 16 us: now the window catches the 12 us gap
            idle.idle(0);
            clock.advance(idle.windowNs() + 1_000);
            idle.idle(0);
        }
        assertEquals(1.0, idle.blockRate() * 12_000, 0.05, "the back-off's work per ns: one request per 12 us wake-up");
        assertTrue(idle.windowNs() >= 12_000, "window " + idle.windowNs());
        // Still contended right after the back-off: polling is on trial (the back-off measured
        // blocking), and at the trial's end it stops again (it served no faster) and the back-off doubles.
        long trialFrom = clock.nanoTime();
        while (idle.contendedSamples() == 1 && clock.nanoTime() - trialFrom < 5 * AdaptivePollIdleStrategy.POLL_TRIAL_NS) {
            ios(idle, 100, 12_000, 1);
        }
        assertTrue(clock.nanoTime() - trialFrom >= AdaptivePollIdleStrategy.POLL_TRIAL_NS, "stopped after " + (clock.nanoTime() - trialFrom));
        assertTrue(idle.trialContendedSamples() > 0);
        assertEquals(2, idle.contendedSamples());
        assertEquals(0, idle.windowNs());
        assertEquals(2 * AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
    }

    @Test
    @DisplayName("adaptive: a switch now and then (fewer than one per four windows) keeps polling")
    void adaptiveKeepsPollingThroughRareSwitches() {
        AdaptivePollIdleStrategy idle = adaptiveCountingSwitches(50_000, 100_000);
        ios(idle, 1_000, 12_000, AdaptivePollIdleStrategy.PREEMPTED_WINDOWS_PER_SWITCH + 1); // 12 ms
        assertEquals(0, idle.contendedSamples());
        assertEquals(0, sleeps);
        assertEquals(50_000, idle.windowNs());
        assertTrue(switchReads <= 13, "one read per 1 ms sample: " + switchReads);
    }

    @Test
    @DisplayName("adaptive: a sample needs enough windows and switches; switches while the window was shut by idleness do not count")
    void adaptiveSamplesOnlyPolling() {
        AdaptivePollIdleStrategy few = adaptiveCountingSwitches(8_000, 100_000);
        ios(few, 80, 100_000, 2); // 8 ms, a window every 100 us, every other one preempted: ~5 switches a sample
        assertEquals(0, few.contendedSamples(), "too few switches to judge");
        ios(few, 80, 100_000, 1); // every one preempted: ~10 switches a sample
        assertTrue(few.contendedSamples() >= 1, "judged once a sample has enough switches");

        AdaptivePollIdleStrategy quick = adaptiveCountingSwitches(8_000, 100_000);
        ios(quick, 8, 125_000, 0); // windows at 0 .. 875 us
        involuntary += 10;
        assertEquals(0, quick.contendedSamples(), "a sample shorter than 1 ms is not judged");
        ios(quick, 1, 125_000, 0); // the 9th window, at 1 ms
        assertEquals(1, quick.contendedSamples(), "judged at the window that makes the sample long enough");

        AdaptivePollIdleStrategy idle = adaptiveCountingSwitches(8_000, 100_000);
        ios(idle, 20, 12_000, 0);
        // The guest goes idle: long waits shrink the window to 0, while the thread is preempted often.
        sleepTakesNs = 5_000_000;
        while (idle.windowNs() > 0) {
            idleFor(idle, idle.windowNs() + 2_000, 2_000);
        }
        involuntary += 1_000;
        // The guest gets busy again: the window grows back (12 us wake-ups) and polls uncontended.
        sleepTakesNs = 12_000;
        while (idle.windowNs() < 16_000) {
            idle.idle(0);
            clock.advance(idle.windowNs() + 1_000);
            idle.idle(0);
        }
        ios(idle, 200, 12_000, 0);
        assertEquals(0, idle.contendedSamples(), "the switches of the idle stretch were not charged to the polling");
        assertEquals(16_000, idle.windowNs());
    }

    @Test
    @DisplayName("adaptive: long waits that shut the window before its sample ends still judge the sample's switches "
            + "(a sleeping guest that wakes on this thread's core)")
    void adaptiveJudgesTheSampleWhenLongWaitsShutTheWindow() {
        AdaptivePollIdleStrategy quiet = adaptiveCountingSwitches(16_000, 100_000);
        clock.update(1_000_000);
        ios(quiet, 20, 12_000, 0);
        sleepTakesNs = 150_000; // waits longer than the maximum: 16 -> 8 -> 4 -> 0 us
        while (quiet.windowNs() > 0) {
            idleFor(quiet, quiet.windowNs() + 2_000, 2_000);
        }
        assertEquals(0, quiet.preemptions(), "no switches: only shrunk");

        AdaptivePollIdleStrategy idle = adaptiveCountingSwitches(16_000, 100_000);
        sleepTakesNs = 0;
        ios(idle, 20, 12_000, 1); // 20 windows in 240 us, each cut short: a sample shorter than 1 ms
        assertEquals(0, idle.contendedSamples());
        sleepTakesNs = 150_000;
        while (idle.windowNs() > 0) {
            idleFor(idle, idle.windowNs() + 2_000, 2_000);
        }
        assertEquals(1, idle.contendedSamples(), "judged when the window shut");
        assertEquals(1, idle.preemptions());
        assertEquals(AdaptivePollIdleStrategy.CONTENDED_BACKOFF_NS, idle.backoffNs());
        sleepTakesNs = 10_000;
        idle.idle(0);
        assertEquals(0, idle.windowNs(), "the back-off holds: a short wait does not regrow it");
    }

    /** The back end's operations in flight, as the fake back end reports them. */
    private int inFlight;

    private AdaptivePollIdleStrategy adaptiveWithInFlight(long initialNs, long maxNs) {
        return new AdaptivePollIdleStrategy(clock, initialNs, maxNs, timedSleeper, () -> {
            switchReads++;
            return involuntary;
        }, () -> inFlight, AdaptivePollIdleStrategy.DEEP_IN_FLIGHT);
    }

    @Test
    @DisplayName("adaptive: a wait that starts with a deep queue in flight sleeps at once (the completion wakes it) "
            + "and leaves the window as the guest's requests sized it")
    void adaptiveSleepsAtOnceWithADeepQueueInFlight() {
        AdaptivePollIdleStrategy idle = adaptiveWithInFlight(50_000, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 5_000; // a completion 5 us into the sleep: would grow a window, or be polled for
        inFlight = AdaptivePollIdleStrategy.DEEP_IN_FLIGHT;
        for (int i = 0; i < 1_000; i++) {
            idle.idle(0);
            assertEquals(i + 1, sleeps, "no polling with " + inFlight + " operations in flight");
            idle.idle(3);
        }
        assertEquals(50_000, idle.windowNs(), "completion waits neither grow nor shrink the window");
        assertEquals(0, idle.grows());
        assertEquals(0, idle.shrinks());
        assertEquals(0, switchReads, "no samples of polling that did not happen");
        assertEquals(1_000, idle.deepWaits());

        // Fewer in flight (depth 1 on a file, or the guest's next request with nothing in flight): polls as before.
        for (int depth : new int[] {AdaptivePollIdleStrategy.DEEP_IN_FLIGHT - 1, 1, 0}) {
            inFlight = depth;
            int before = sleeps;
            idle.idle(0);
            clock.advance(10_000);
            idle.idle(0);
            idle.idle(1);
            assertEquals(before, sleeps, "polls with " + depth + " in flight");
        }

        // The I/O thread's strategy reads the back end's operations in flight.
        Tuning adaptiveTuning = Tuning.builder().waitStrategy(WaitStrategy.ADAPTIVE).build();
        int before = sleeps;
        IdleStrategies.forIoThread(adaptiveTuning, clock, timedSleeper, () -> 128).idle(0);
        assertEquals(before + 1, sleeps, "128 in flight: to the kernel at once");
        IdleStrategies.forIoThread(adaptiveTuning, clock, timedSleeper, () -> 0).idle(0);
        assertEquals(before + 1, sleeps, "nothing in flight: polls");
    }

    @Test
    @DisplayName("adaptive on a shared thread: the deep-queue rule reads the thread's in-flight sum once per wait")
    void sharedThreadSleepsAtOnceWithADeepQueueInFlight() {
        clock.update(1_000_000);
        sleepTakesNs = 5_000;
        int[] reads = new int[1];
        AdaptivePollIdleStrategy idle = (AdaptivePollIdleStrategy) IdleStrategies.forSharedThread(WaitStrategy.ADAPTIVE,
                50_000, clock, timedSleeper, () -> {
                    reads[0]++;
                    return inFlight;
                });
        inFlight = AdaptivePollIdleStrategy.DEEP_IN_FLIGHT;
        for (int i = 0; i < 100; i++) {
            idle.idle(0);
            assertEquals(i + 1, sleeps, inFlight + " in flight over the members: no polling");
            idle.idle(2);
        }
        assertEquals(100, reads[0], "one read of the sum per wait");
        assertEquals(100, idle.deepWaits());
        assertEquals(50_000, idle.windowNs(), "completion waits leave the window alone");
        assertEquals(0, idle.grows());

        inFlight = AdaptivePollIdleStrategy.DEEP_IN_FLIGHT - 1;
        int before = sleeps;
        idle.idle(0);
        clock.advance(10_000);
        idle.idle(0);
        clock.advance(10_000);
        idle.idle(0);
        assertEquals(before, sleeps, "a shallow sum polls the window");
        assertEquals(101, reads[0], "still one read for the whole wait");
        idle.idle(1);
    }

    /**
     * {@code n} I/Os where the guest posts its next request only once this thread sleeps (it
     * waits for the core this thread polls on), {@code sleepTakesNs} later; an idle round every 1 us.
     * Returns the time spent polling.
     */
    private long iosPostedAfterTheSleep(AdaptivePollIdleStrategy idle, int n) {
        long polledNs = 0;
        for (int i = 0; i < n; i++) {
            int before = sleeps;
            while (true) {
                idle.idle(0);
                if (sleeps != before) {
                    break;
                }
                clock.advance(1_000);
                polledNs += 1_000;
            }
            idle.idle(1);
        }
        return polledNs;
    }

    @Test
    @DisplayName("adaptive: a window that keeps running out just before the guest posts (the guest waits for this "
            + "thread's core: starvation by its own polling) shuts for a back-off that does not double")
    void adaptiveStopsPollingThatStarvesTheGuest() {
        AdaptivePollIdleStrategy idle = adaptiveCountingSwitches(0, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 3_000; // each wait ends 3 us after the sleep, however long the window was
        // Grows (each wait ended soon after the window) and, under QEMU's rules alone, swings
        // between 50 and 100 us for good: every I/O polls 50-100 us and catches nothing.
        iosPostedAfterTheSleep(idle, 40);
        assertEquals(1, idle.unpaidSamples(), "a sample of windows that caught nothing");
        assertEquals(0, idle.windowNs());
        assertEquals(0, idle.preemptions(), "not contention: no involuntary switch, no gap");
        long polled = iosPostedAfterTheSleep(idle, 1_000); // 3 ms: within the back-off
        assertEquals(0, polled, "sleeps at once: the guest gets the core");
        assertEquals(0, idle.windowNs());
        clock.advance(AdaptivePollIdleStrategy.UNPAID_BACKOFF_NS);

        // After the back-off the window regrows, finds the same, and shuts again for the same back-off.
        iosPostedAfterTheSleep(idle, 40);
        assertEquals(2, idle.unpaidSamples());
        assertEquals(0, idle.windowNs());
        assertEquals(0, iosPostedAfterTheSleep(idle, 1_000));
        clock.advance(AdaptivePollIdleStrategy.UNPAID_BACKOFF_NS);
        // The guest has moved to another core: it posts 2 us into each wait; the window regrows and catches.
        for (int i = 0; i < 1_000; i++) {
            idle.idle(0);
            clock.advance(2_000);
            idle.idle(0);
            idle.idle(1);
        }
        assertTrue(idle.windowNs() >= AdaptivePollIdleStrategy.GROW_START_NS, "window " + idle.windowNs());
        assertEquals(2, idle.unpaidSamples());
        assertEquals(0, idle.preemptions());
    }

    /** The share of wall time the fake thread spends on a run queue (its run delay grows by this). */
    private double runDelayShare;
    private long runDelayNs;
    private long runDelayAt;
    private int runDelayReads;

    private long runDelay() {
        runDelayReads++;
        long now = clock.nanoTime();
        runDelayNs += (long) ((now - runDelayAt) * runDelayShare);
        runDelayAt = now;
        return runDelayNs;
    }

    private AdaptivePollIdleStrategy adaptiveReadingRunDelay(long initialNs, long maxNs) {
        clock.update(1_000_000);
        runDelayAt = clock.nanoTime();
        return new AdaptivePollIdleStrategy(clock, initialNs, maxNs, timedSleeper, () -> 0, () -> 0,
                AdaptivePollIdleStrategy.DEEP_IN_FLIGHT, this::runDelay);
    }

    /**
     * {@code n} I/Os at depth 1, each request posted {@code atNs} after its wait starts, whether
     * this thread polls (a window that long catches it) or sleeps (the kick ends the sleep then).
     */
    private void iosPostedAt(AdaptivePollIdleStrategy idle, int n, long atNs) {
        for (int i = 0; i < n; i++) {
            long postedAt = clock.nanoTime() + atNs;
            int before = sleeps;
            while (clock.nanoTime() < postedAt) {
                sleepTakesNs = postedAt - clock.nanoTime();
                idle.idle(0);
                if (sleeps != before) {
                    break;
                }
                clock.advance(Math.min(1_000, postedAt - clock.nanoTime()));
            }
            idle.idle(1);
        }
    }

    /** {@code n} I/Os of a polling guest: each request posted 2 us into the wait. */
    private void iosPostedAfter2Us(AdaptivePollIdleStrategy idle, int n) {
        for (int i = 0; i < n; i++) {
            idle.idle(0);
            clock.advance(2_000);
            idle.idle(0);
            idle.idle(1);
        }
    }

    @Test
    @DisplayName("adaptive, oversubscribed (its run delay grows by 10% of the wall time or more): a blocking guest's "
            + "wake-up is not spun through; the window is cut to 4 us, shuts when it misses and reopens 5 ms later")
    void adaptiveOversubscribedSleepsForABlockingGuest() {
        AdaptivePollIdleStrategy idle = adaptiveReadingRunDelay(50_000, 100_000);
        runDelayShare = 0.3; // two busy loops, a guest and this thread on two cores: 24-41% measured
        sleepTakesNs = 30_000; // a blocking guest: the next request comes 30 us after the wait starts, after a wake-up
        // The first read (1 ms in, on the I/O thread) starts the count, the second judges it.
        iosPostedAfterTheSleep(idle, 100);
        assertTrue(idle.oversubscribed());
        assertTrue(idle.oversubscribedReads() >= 1);
        assertEquals(0, idle.windowNs(), "shut (by the unpaid rule first: the windows never caught)");
        long polled = iosPostedAfterTheSleep(idle, 100); // 3 ms: inside the back-off
        assertEquals(0, polled, "sleeps at once: no spin while other threads wait for the cores");
        // Over 60 ms the window reopens once per back-off, for one small window each time.
        int missesBefore = (int) idle.oversubscribedMisses();
        polled = iosPostedAfterTheSleep(idle, 2_000);
        long reopened = idle.oversubscribedMisses() - missesBefore;
        assertTrue(reopened >= 5 && reopened <= 60_000_000 / AdaptivePollIdleStrategy.OVERSUBSCRIBED_MISS_BACKOFF_NS + 1,
                "reopened " + reopened + " times");
        assertTrue(polled <= reopened * AdaptivePollIdleStrategy.OVERSUBSCRIBED_MISSES_TO_SHUT
                * AdaptivePollIdleStrategy.OVERSUBSCRIBED_WINDOW_NS, "polled " + polled + " ns");
        assertTrue(runDelayReads <= 2_200 * 30_000 / AdaptivePollIdleStrategy.SAMPLE_NS + 2, "read at most once per ms: " + runDelayReads);
    }

    @Test
    @DisplayName("adaptive, oversubscribed: a polling guest's next request, 2 us into the wait, is still caught by a 4 us window")
    void adaptiveOversubscribedStillCatchesAPollingGuest() {
        AdaptivePollIdleStrategy idle = adaptiveReadingRunDelay(50_000, 100_000);
        runDelayShare = 0.5;
        sleepTakesNs = 30_000;
        iosPostedAfter2Us(idle, 2_000); // 4 ms
        assertTrue(idle.oversubscribed());
        assertEquals(AdaptivePollIdleStrategy.OVERSUBSCRIBED_WINDOW_NS, idle.windowNs());
        assertEquals(0, idle.oversubscribedMisses());
        assertEquals(0, sleeps, "every request caught by polling");
        // The guest loses its core now and then (one request in five waits 30 us): the window stays.
        for (int i = 1; i <= 500; i++) {
            if (i % 5 == 0) {
                iosPostedAfterTheSleep(idle, 1);
            } else {
                iosPostedAfter2Us(idle, 1);
            }
        }
        assertEquals(AdaptivePollIdleStrategy.OVERSUBSCRIBED_WINDOW_NS, idle.windowNs());
        assertEquals(0, idle.oversubscribedMisses());
        assertEquals(100, sleeps);
    }

    @Test
    @DisplayName("adaptive: a run delay below 10% of the wall time (or none readable) leaves QEMU's grow rule alone, "
            + "and the window grows again once oversubscription ends")
    void adaptiveGrowsWhenNotOversubscribed() {
        // The guest posts 50 us into each wait: 4-32 us windows miss it, 60 us windows catch it.
        AdaptivePollIdleStrategy idle = adaptiveReadingRunDelay(0, 60_000);
        runDelayShare = 0.05;
        iosPostedAt(idle, 200, 50_000);
        assertTrue(runDelayReads >= 2);
        assertFalse(idle.oversubscribed());
        assertEquals(60_000, idle.windowNs(), "grown to the maximum");

        runDelayShare = 0.3; // the competition arrives
        iosPostedAt(idle, 100, 50_000);
        assertTrue(idle.oversubscribed());
        assertTrue(idle.windowNs() <= AdaptivePollIdleStrategy.OVERSUBSCRIBED_WINDOW_NS, "window " + idle.windowNs());

        runDelayShare = 0; // and leaves: 50 ms of clear reads clear it (one clear read does not), the window regrows
        iosPostedAt(idle, 60, 50_000); // 3 ms
        assertTrue(idle.oversubscribed(), "held through a short lull");
        assertTrue(idle.windowNs() <= AdaptivePollIdleStrategy.OVERSUBSCRIBED_WINDOW_NS, "window " + idle.windowNs());
        iosPostedAt(idle, 1_000, 50_000); // 50 ms
        assertFalse(idle.oversubscribed());
        iosPostedAt(idle, 300, 50_000);
        assertEquals(60_000, idle.windowNs());

        AdaptivePollIdleStrategy unknown = new AdaptivePollIdleStrategy(clock, 0, 60_000, timedSleeper, () -> 0, () -> 0,
                AdaptivePollIdleStrategy.DEEP_IN_FLIGHT, () -> -1);
        iosPostedAt(unknown, 200, 50_000);
        assertFalse(unknown.oversubscribed());
        assertEquals(60_000, unknown.windowNs(), "no run delay readable: the rules as before");
    }

    @Test
    @DisplayName("adaptive: a window that catches one request in ten keeps polling (on a contended host the wake-up "
            + "a catch saves waits for a core)")
    void adaptiveKeepsAWindowThatCatchesNowAndThen() {
        AdaptivePollIdleStrategy idle = adaptiveCountingSwitches(0, 100_000);
        clock.update(1_000_000);
        sleepTakesNs = 3_000;
        for (int i = 1; i <= 500; i++) { // ~40 ms
            if (i % 10 == 0 && idle.windowNs() > 2_000) {
                idle.idle(0);
                clock.advance(2_000); // the guest got a core of its own this time: caught 2 us in
                idle.idle(0);
                idle.idle(1);
            } else {
                iosPostedAfterTheSleep(idle, 1);
            }
        }
        assertEquals(0, idle.unpaidSamples());
        assertEquals(0, idle.preemptions());
        assertTrue(idle.windowNs() >= 50_000, "window " + idle.windowNs());
    }

    @Test
    @DisplayName("adaptive: a window that misses while it grows, then catches the guest's requests, pays: it keeps polling")
    void adaptiveKeepsAWindowThatCatchesAfterGrowing() {
        // The guest posts 90 us after each wait starts, whether this thread polls or sleeps (a
        // sleep ends then): 4, 8, 16, 32 and 64 us windows miss it (each wait grows the window),
        // 100 us windows catch it.
        long[] postAt = new long[1];
        AdaptivePollIdleStrategy idle = new AdaptivePollIdleStrategy(clock, 0, 100_000, () -> {
            sleeps++;
            clock.update(Math.max(clock.nanoTime(), postAt[0]));
        }, () -> involuntary);
        clock.update(1_000_000);
        int caught = 0;
        for (int i = 0; i < 300; i++) { // 27 ms
            postAt[0] = clock.nanoTime() + 90_000;
            int before = sleeps;
            idle.idle(0);
            while (sleeps == before && clock.nanoTime() < postAt[0]) {
                clock.advance(1_000);
                idle.idle(0);
            }
            caught += sleeps == before ? 1 : 0;
            idle.idle(1);
        }
        assertTrue(caught > 290, "caught " + caught);
        assertEquals(0, idle.unpaidSamples());
        assertEquals(0, idle.preemptions());
        assertEquals(100_000, idle.windowNs());
    }

    @Test
    @DisplayName("adaptive: small windows that miss while the thread mostly sleeps (a guest often off its core) cost "
            + "little: they grow and shrink, no back-off")
    void adaptiveKeepsCheapMisses() {
        AdaptivePollIdleStrategy idle = adaptiveCountingSwitches(4_000, 100_000);
        clock.update(1_000_000);
        // Waits alternate: 10 us (grows the window) and 200 us (shrinks it): 4 and 8 us windows
        // that never catch anything, polling about 3% of the time.
        for (int i = 0; i < 2_000; i++) { // ~210 ms
            sleepTakesNs = (i % 2 == 0 ? 10_000 : 200_000) - idle.windowNs();
            int before = sleeps;
            while (sleeps == before) {
                idle.idle(0);
                if (sleeps == before) {
                    clock.advance(1_000);
                }
            }
            idle.idle(1);
        }
        assertTrue(idle.windowNs() <= 8_000, "window " + idle.windowNs());
        assertEquals(0, idle.unpaidSamples());
        assertEquals(0, idle.preemptions());
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
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.BUSY_SPIN).build(), clock, sleeper, () -> 0));
        // Both are Agrona back-offs; what tells them apart is their parameters (Agrona's toString
        // prints them): YIELDING spins, then yields without end; SLEEPING spins, yields a while,
        // then parks for the sleep period. Swapping the two must fail here.
        Tuning yieldingTuning = b.waitStrategy(WaitStrategy.YIELDING).build();
        IdleStrategy yieldingBackoff = IdleStrategies.forIoThread(yieldingTuning, clock, sleeper, () -> 0);
        assertInstanceOf(BackoffIdleStrategy.class, yieldingBackoff);
        assertEquals(backoff(IdleStrategies.SPIN_ROUNDS, Long.MAX_VALUE, yieldingTuning.sleepNs()),
                backoffParameters(yieldingBackoff), "YIELDING: spin, then yield for ever");
        Tuning sleepingTuning = b.waitStrategy(WaitStrategy.SLEEPING).build();
        IdleStrategy sleepingBackoff = IdleStrategies.forIoThread(sleepingTuning, clock, sleeper, () -> 0);
        assertInstanceOf(BackoffIdleStrategy.class, sleepingBackoff);
        assertEquals(backoff(IdleStrategies.SPIN_ROUNDS, IdleStrategies.SPIN_ROUNDS, sleepingTuning.sleepNs()),
                backoffParameters(sleepingBackoff), "SLEEPING: spin, yield a while, then park");
        assertInstanceOf(KernelIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.BLOCKING).build(), clock, sleeper, () -> 0));
        assertInstanceOf(AdaptivePollIdleStrategy.class,
                IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.ADAPTIVE).build(), clock, sleeper, () -> 1),
                "the in-flight yield is off by default");
        IdleStrategy yielding = IdleStrategies.forIoThread(b.waitStrategy(WaitStrategy.ADAPTIVE).inFlightYieldNs(1_000_000).build(),
                clock, sleeper, () -> 0);
        assertInstanceOf(InFlightYieldIdleStrategy.class, yielding);
        assertInstanceOf(AdaptivePollIdleStrategy.class, ((InFlightYieldIdleStrategy) yielding).delegate());
        // a poll maximum of 0 never polls: neither the window nor the yield while operations are in flight
        assertInstanceOf(AdaptivePollIdleStrategy.class, IdleStrategies.forIoThread(
                b.waitStrategy(WaitStrategy.ADAPTIVE).inFlightYieldNs(1_000_000).pollMaxNs(0).build(), clock, sleeper, () -> 1));
        assertInstanceOf(YieldingIdleStrategy.class,
                IdleStrategies.forSharedThread(WaitStrategy.YIELDING, 0, clock, sleeper, () -> 0));
    }

    /** The parameters Agrona's {@link BackoffIdleStrategy#toString()} prints, as the mapping should set them. */
    private static String backoff(long spins, long yields, long parkNs) {
        return "maxSpins=" + spins + ", maxYields=" + yields + ", minParkPeriodNs=" + parkNs + ", maxParkPeriodNs=" + parkNs;
    }

    /** {@code idle}'s parameters from its toString ({@code maxSpins=...} to {@code maxParkPeriodNs=...}). */
    private static String backoffParameters(IdleStrategy idle) {
        String s = idle.toString();
        int from = s.indexOf("maxSpins=");
        int to = s.indexOf('}', from);
        assertTrue(from >= 0 && to > from, "Agrona's toString no longer prints the parameters: " + s);
        return s.substring(from, to);
    }
}
