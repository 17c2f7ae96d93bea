package io.vblk.engine;

import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;

/**
 * Polls for a window after the last work, then sleeps in the kernel ({@link WaitStrategy#ADAPTIVE}),
 * with a window that pays for itself. Polling catches the next request of a busy guest without a
 * kick or a wake-up; it is worth it only while wake-ups come soon after the window would have
 * ended, and only while the thread has a core to itself.
 *
 * <ul>
 * <li><b>Grow</b> (QEMU's poll-grow): the wait ended (in the kernel) later than the window but
 *     within {@code maxPollNs}: a longer window would have caught it; double it (from 4 us).
 * <li><b>Shrink</b> (poll-shrink): the wait lasted longer than {@code maxPollNs}, so the poll
 *     was wasted CPU: halve it (below 4 us: 0, block at once).
 * <li><b>Yield</b>: every {@code yieldIntervalNs} of polling, {@code sched_yield}: free when no
 *     other thread wants this CPU, and hands it over when one does (an oversubscribed host, a
 *     guest vCPU that must run before it can post the request polled for).
 * <li><b>Preempted</b>: a gap of more than {@link #PREEMPTED_GAP_NS} between two idle rounds
 *     means the thread lost its core while polling (or yielded it to someone who used it): the
 *     core is contended, so shrink and sleep now instead of burning the rest of the window.
 * </ul>
 *
 * A window that caught the work (no kernel sleep) is left alone: that is the sweet spot. Owned
 * by one thread; allocation-free.
 */
final class AdaptivePollIdleStrategy implements IdleStrategy {
    /** {@link Tuning#pollMaxNs()}'s default. */
    static final long DEFAULT_POLL_MAX_NS = 100_000;
    /** The first step up from no polling, and the smallest window kept when shrinking. */
    static final long GROW_START_NS = 4_000;
    /** How long it polls between two yields. */
    static final long DEFAULT_YIELD_INTERVAL_NS = 20_000;
    /** A gap between idle rounds this long means the thread was not running. */
    static final long PREEMPTED_GAP_NS = 50_000;

    private final NanoClock clock;
    private final long maxPollNs;
    private final long yieldIntervalNs;
    private final KernelSleep sleeper;
    private long windowNs;
    private boolean polling;
    private long pollStartNs;
    private long lastRoundNs;
    private long nextYieldNs;
    private long sleeps;
    private long yields;
    private long grows;
    private long shrinks;
    private long preemptions;

    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper) {
        this(clock, initialPollNs, maxPollNs, DEFAULT_YIELD_INTERVAL_NS, sleeper);
    }

    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, long yieldIntervalNs,
                             KernelSleep sleeper) {
        if (initialPollNs < 0 || maxPollNs < 0 || yieldIntervalNs <= 0) {
            throw new IllegalArgumentException("poll " + initialPollNs + " ns, max " + maxPollNs + " ns, yield every "
                    + yieldIntervalNs + " ns: must not be negative (the interval positive)");
        }
        this.clock = clock;
        this.maxPollNs = maxPollNs;
        this.yieldIntervalNs = yieldIntervalNs;
        this.sleeper = sleeper;
        this.windowNs = Math.min(initialPollNs, maxPollNs);
    }

    @Override
    public void idle(int workCount) {
        if (workCount > 0) {
            polling = false; // the window caught it: the sweet spot, nothing to adjust
        } else {
            idle();
        }
    }

    @Override
    public void idle() {
        long now = clock.nanoTime();
        if (!polling) {
            polling = true;
            pollStartNs = now;
            nextYieldNs = now + yieldIntervalNs;
        } else if (now - lastRoundNs > PREEMPTED_GAP_NS) {
            preemptions++;
            shrink();
            sleep(false);
            return;
        }
        lastRoundNs = now;
        if (now - pollStartNs >= windowNs) {
            sleep(true);
        } else if (now - nextYieldNs >= 0) {
            yields++;
            Thread.yield();
            nextYieldNs = now + yieldIntervalNs;
        } else {
            Thread.onSpinWait();
        }
    }

    /** Sleeps in the kernel; then, when {@code adjust}, sizes the window by how long the wait was. */
    private void sleep(boolean adjust) {
        sleeps++;
        sleeper.sleep();
        long waitedNs = clock.nanoTime() - pollStartNs;
        polling = false;
        if (!adjust || waitedNs <= windowNs) {
            return; // the re-check before sleeping found work at once
        }
        if (waitedNs > maxPollNs) {
            shrink();
        } else if (windowNs < maxPollNs) {
            grows++;
            windowNs = windowNs == 0 ? Math.min(GROW_START_NS, maxPollNs) : Math.min(maxPollNs, windowNs * 2);
        }
    }

    private void shrink() {
        if (windowNs > 0) {
            shrinks++;
            windowNs = windowNs / 2 < GROW_START_NS ? 0 : windowNs / 2;
        }
    }

    @Override
    public void reset() {
        polling = false;
    }

    /** The poll window now. */
    long windowNs() {
        return windowNs;
    }

    long sleeps() {
        return sleeps;
    }

    long yields() {
        return yields;
    }

    long grows() {
        return grows;
    }

    long shrinks() {
        return shrinks;
    }

    long preemptions() {
        return preemptions;
    }

    @Override
    public String alias() {
        return "adaptive-poll";
    }
}
