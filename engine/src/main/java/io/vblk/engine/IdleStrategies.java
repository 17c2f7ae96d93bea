package io.vblk.engine;

import java.util.function.IntSupplier;

import org.agrona.concurrent.BackoffIdleStrategy;
import org.agrona.concurrent.BusySpinIdleStrategy;
import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;
import org.agrona.concurrent.YieldingIdleStrategy;

import io.vblk.sys.ThreadSwitches;

/** The Agrona {@link IdleStrategy} a data-plane thread runs for each {@link WaitStrategy}. */
final class IdleStrategies {
    /** Rounds spun before yielding, and yields before parking ({@link WaitStrategy#SLEEPING}). */
    static final int SPIN_ROUNDS = 100;

    /**
     * Whether the adaptive strategy reads its thread's run delay and polls only for a guest that
     * answers at once while the machine is oversubscribed ({@link AdaptivePollIdleStrategy}).
     * Off by default ({@code -Dvblk.adaptive.runDelay=true} turns it on): measured 2026-12-05
     * 22:33-22:46 on the contention cell it was written for (depth 1, guest blocking, two busy
     * loops) it did not beat the rules without it (median 32.4k IOPS against 40.4k for the build
     * without it over 11 same-run pairs, load 4.6-11), see the README's Performance section.
     */
    static final boolean RUN_DELAY = Boolean.getBoolean("vblk.adaptive.runDelay");

    /**
     * Whether the adaptive strategy goes on polling under contention while polling serves more
     * work per unit of time than its last back-off's blocking did ({@link AdaptivePollIdleStrategy},
     * "unless polling serves the guest faster"). Off by default ({@code -Dvblk.adaptive.pollPays=true}
     * turns it on): written for depth 1 with a polling guest and two busy loops, whose slow mode
     * matches the lost-share back-off, it was measured on 2026-12-06 19:44-20:18 only at load
     * 10-31 from other builds, where that cell made 5-145k IOPS with either build (against
     * 95-380k at load 1-5) and no direction showed; quietly (load 1-4, 2026-12-06 20:58-21:14)
     * it reached the cell's fast mode in 6 of 16 runs against 2 of 16 without it: a lean, not a
     * direction. Since session 17 it judges polling over a 16 ms trial after each measured
     * back-off, not over the first 1 ms sample; see docs/performance-log.md.
     */
    static final boolean POLL_PAYS = Boolean.getBoolean("vblk.adaptive.pollPays");

    private IdleStrategies() {
    }

    /** The calling thread's run delay, or none (-1: the rule is off) unless {@link #RUN_DELAY}. */
    private static java.util.function.LongSupplier runDelay() {
        return RUN_DELAY ? new ThreadRunDelay()::nanos : () -> -1;
    }

    /**
     * {@code idle} as it is when {@code sliceNs} is 0, else wrapped so that the thread runs with
     * a slice of {@code sliceNs} only while it pays ({@link SliceGovernor}, fed by the thread's
     * own {@code /proc/thread-self/schedstat} and changing its slice with {@code sched_setattr}).
     */
    static IdleStrategy sliced(IdleStrategy idle, long sliceNs, NanoClock clock) {
        if (sliceNs <= 0) {
            return idle;
        }
        return new SlicedIdleStrategy(idle, new SliceGovernor(sliceNs, schedstats.get(), new KernelSlice()), clock);
    }

    /**
     * Where a sliced thread's scheduler statistics come from: its own {@code
     * /proc/thread-self/schedstat}; a test puts a fake here (before the thread is built, and
     * back after) to drive a real thread's slice without loading the machine.
     */
    static volatile java.util.function.Supplier<SliceGovernor.Schedstat> schedstats = ThreadRunDelay::new;

    /** The slice the thread of {@code idle} runs with now as the kernel reported it (0: the default, or no governor). */
    static long reportedSliceNs(IdleStrategy idle) {
        return idle instanceof SlicedIdleStrategy s && s.governor().control() instanceof KernelSlice k ? k.reportedNs() : 0;
    }

    /**
     * For a device's own I/O thread. Adaptive does not poll while the back end holds a deep queue
     * ({@code inFlight} at least {@link AdaptivePollIdleStrategy#DEEP_IN_FLIGHT}: the completions
     * wake it); with a poll window ({@link Tuning#pollMaxNs()} above 0) and {@link
     * Tuning#inFlightYieldNs()} set it also yields between rounds while the back end holds
     * operations, see {@link InFlightYieldIdleStrategy}; a poll maximum of 0 turns both kinds of
     * polling off.
     */
    static IdleStrategy forIoThread(Tuning tuning, NanoClock clock, KernelSleep sleeper, IntSupplier inFlight) {
        switch (tuning.waitStrategy()) {
            case BUSY_SPIN:
                return new BusySpinIdleStrategy();
            case YIELDING:
                return new BackoffIdleStrategy(SPIN_ROUNDS, Long.MAX_VALUE, tuning.sleepNs(), tuning.sleepNs());
            case SLEEPING:
                return new BackoffIdleStrategy(SPIN_ROUNDS, SPIN_ROUNDS, tuning.sleepNs(), tuning.sleepNs());
            case BLOCKING:
                return new KernelIdleStrategy(sleeper);
            default:
                IdleStrategy adaptive = new AdaptivePollIdleStrategy(clock, tuning.pollNs(), tuning.pollMaxNs(), sleeper,
                        new ThreadSwitches()::involuntary, inFlight, AdaptivePollIdleStrategy.DEEP_IN_FLIGHT,
                        runDelay()).comparingRates(POLL_PAYS);
                return tuning.pollMaxNs() > 0 && tuning.inFlightYieldNs() > 0
                        ? new InFlightYieldIdleStrategy(adaptive, inFlight, clock, tuning.inFlightYieldNs())
                        : adaptive;
        }
    }

    /**
     * For a {@link SharedIoThread}, which never parks blind: it yields or sleeps in the kernel.
     * Adaptive follows the I/O thread's deep-queue rule with {@code inFlight} the operations in
     * flight summed over every back end the thread serves: with {@link
     * AdaptivePollIdleStrategy#DEEP_IN_FLIGHT} or more a wait goes to the kernel at once (any
     * member's completion eventfd wakes the thread) and does not size the window.
     */
    static IdleStrategy forSharedThread(WaitStrategy strategy, long pollNs, NanoClock clock, KernelSleep sleeper,
                                        IntSupplier inFlight) {
        switch (strategy) {
            case BUSY_SPIN:
                return new BusySpinIdleStrategy();
            case YIELDING:
            case SLEEPING:
                return new YieldingIdleStrategy();
            case BLOCKING:
                return new KernelIdleStrategy(sleeper);
            default:
                return new AdaptivePollIdleStrategy(clock, pollNs, Math.max(pollNs, AdaptivePollIdleStrategy.DEFAULT_POLL_MAX_NS), sleeper,
                        new ThreadSwitches()::involuntary, inFlight, AdaptivePollIdleStrategy.DEEP_IN_FLIGHT,
                        runDelay()).comparingRates(POLL_PAYS);
        }
    }
}
