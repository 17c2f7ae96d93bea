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
 * <li><b>Yield to whoever needs the core</b>: a gap of more than {@link #PREEMPTED_GAP_NS}
 *     between two idle rounds means the thread lost its core while polling: another runnable
 *     thread (a vCPU that must run before it can post the request polled for, a neighbour on an
 *     oversubscribed host) needs it. The window drops to 0 and the thread sleeps in the kernel
 *     at once, and the window does not grow again for a back-off ({@link #CONTENDED_BACKOFF_NS},
 *     doubling up to {@link #MAX_CONTENDED_BACKOFF_NS} while preemptions keep coming within a
 *     back-off of the last one: a host with steady competition ends up blocking): the core is
 *     handed over, and a kick (notifications are re-enabled before sleeping) brings the thread
 *     back with the scheduler's wake-up preference. A plain {@code sched_yield} while polling
 *     measured far worse (depth 1, guest polling, loaded host: p50 3.9 ms against 0.12 ms for a
 *     fixed window): the yielding thread queues behind every runnable thread while the guest's
 *     kicks stay suppressed, so nothing brings it back early.
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
    /** A gap between idle rounds this long means the thread was not running. */
    static final long PREEMPTED_GAP_NS = 50_000;
    /** How long the window stays shut after the thread lost its core while polling. */
    static final long CONTENDED_BACKOFF_NS = 20_000_000;
    /** The longest back-off, reached by preemptions in a row. */
    static final long MAX_CONTENDED_BACKOFF_NS = 1_000_000_000;

    private final NanoClock clock;
    private final long maxPollNs;
    private final KernelSleep sleeper;
    private long windowNs;
    private boolean polling;
    private long pollStartNs;
    private long lastRoundNs;
    private long contendedUntilNs;
    private long backoffNs = CONTENDED_BACKOFF_NS;
    private long sleeps;
    private long grows;
    private long shrinks;
    private long preemptions;

    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper) {
        if (initialPollNs < 0 || maxPollNs < 0) {
            throw new IllegalArgumentException("poll " + initialPollNs + " ns, max " + maxPollNs + " ns: must not be negative");
        }
        this.clock = clock;
        this.maxPollNs = maxPollNs;
        this.sleeper = sleeper;
        this.windowNs = Math.min(initialPollNs, maxPollNs);
        this.contendedUntilNs = clock.nanoTime() - MAX_CONTENDED_BACKOFF_NS; // no back-off running
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
        } else if (now - lastRoundNs > PREEMPTED_GAP_NS) {
            preemptions++;
            if (windowNs > 0) {
                shrinks++;
                windowNs = 0;
            }
            // Preempted again within a back-off of the last one ending: the competition is steady.
            backoffNs = now - contendedUntilNs < backoffNs ? Math.min(MAX_CONTENDED_BACKOFF_NS, backoffNs * 2)
                    : CONTENDED_BACKOFF_NS;
            contendedUntilNs = now + backoffNs;
            sleep(false);
            return;
        }
        lastRoundNs = now;
        if (now - pollStartNs >= windowNs) {
            sleep(true);
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
        } else if (windowNs < maxPollNs && clock.nanoTime() - contendedUntilNs >= 0) {
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

    long grows() {
        return grows;
    }

    long shrinks() {
        return shrinks;
    }

    /** The back-off the last preemption started. */
    long backoffNs() {
        return backoffNs;
    }

    long preemptions() {
        return preemptions;
    }

    @Override
    public String alias() {
        return "adaptive-poll";
    }
}
