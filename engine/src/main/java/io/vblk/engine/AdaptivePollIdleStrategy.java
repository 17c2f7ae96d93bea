package io.vblk.engine;

import java.util.function.LongSupplier;

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
 * <li><b>Yield when the scheduler keeps taking the core</b>: a preemption shorter than the gap
 *     above (the guest thread this one just interrupted runs 10-20 us on its core, then sleeps)
 *     leaves no visible gap, yet it is the common case on a host with one runnable thread too
 *     many: every poll is cut short by the guest it serves, and the request that guest posts
 *     meanwhile waits, unkicked, until the scheduler hands the core back (a p99 of 116 us
 *     against 35 us sleeping in the kernel, and twice the CPU per I/O). So the thread counts
 *     its involuntary context switches (one {@code getrusage} per sample of at least {@link
 *     #SAMPLE_NS}, never per request): when at least one poll window in {@link
 *     #PREEMPTED_WINDOWS_PER_SWITCH} of a sample was matched by an involuntary switch, it treats
 *     the sample as one preemption above (window 0, back-off). A thread that sleeps instead
 *     keeps the scheduler's wake-up preference, which on a contended host is what makes it fast.
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
    /** The shortest stretch of polling over which involuntary switches are counted. */
    static final long SAMPLE_NS = 1_000_000;
    /** Poll windows a sample needs before its switch count says anything. */
    static final int MIN_SAMPLE_WINDOWS = 8;
    /** One involuntary switch per this many poll windows (or more) means the core is contended. */
    static final int PREEMPTED_WINDOWS_PER_SWITCH = 4;
    /** A sample open this long without enough windows is dropped (its switches may not be polling's). */
    static final long STALE_SAMPLE_NS = 64 * SAMPLE_NS;

    private final NanoClock clock;
    private final long maxPollNs;
    private final KernelSleep sleeper;
    /** The thread's involuntary context switches so far ({@code getrusage(RUSAGE_THREAD)}). */
    private final LongSupplier involuntarySwitches;
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
    private long contendedSamples;
    /** A switch-count sample is open: it started at {@link #sampleStartNs} with {@link #sampleSwitches}. */
    private boolean sampleOpen;
    private long sampleStartNs;
    private long sampleSwitches;
    private int sampleWindows;

    /** As below, without the switch count: only a visible gap between rounds shows a preemption. */
    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper) {
        this(clock, initialPollNs, maxPollNs, sleeper, () -> 0);
    }

    /**
     * @param involuntarySwitches the calling thread's involuntary context switches so far (read
     *                            at most once per {@link #SAMPLE_NS} of polling, on this thread)
     */
    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper,
                             LongSupplier involuntarySwitches) {
        if (initialPollNs < 0 || maxPollNs < 0) {
            throw new IllegalArgumentException("poll " + initialPollNs + " ns, max " + maxPollNs + " ns: must not be negative");
        }
        this.clock = clock;
        this.maxPollNs = maxPollNs;
        this.sleeper = sleeper;
        this.involuntarySwitches = involuntarySwitches;
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
            if (windowNs > 0 && sampleWindow(now)) {
                contended(now);
                sleep(false);
                return;
            }
        } else if (now - lastRoundNs > PREEMPTED_GAP_NS) {
            contended(now);
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

    /** The core was taken from the polling thread: shut the window and start (or double) the back-off. */
    private void contended(long now) {
        preemptions++;
        if (windowNs > 0) {
            shrinks++;
            windowNs = 0;
        }
        sampleOpen = false;
        // Preempted again within a back-off of the last one ending: the competition is steady.
        backoffNs = now - contendedUntilNs < backoffNs ? Math.min(MAX_CONTENDED_BACKOFF_NS, backoffNs * 2)
                : CONTENDED_BACKOFF_NS;
        contendedUntilNs = now + backoffNs;
    }

    /**
     * Counts a poll window starting at {@code now} into the switch-count sample; at the end of a
     * sample (at least {@link #SAMPLE_NS} and {@link #MIN_SAMPLE_WINDOWS} windows) reads the
     * switch count once and returns whether the windows were preempted often enough to stop
     * polling. The same read opens the next sample.
     */
    private boolean sampleWindow(long now) {
        if (!sampleOpen || now - sampleStartNs > STALE_SAMPLE_NS) {
            openSample(now, involuntarySwitches.getAsLong());
            return false;
        }
        sampleWindows++;
        if (now - sampleStartNs < SAMPLE_NS || sampleWindows < MIN_SAMPLE_WINDOWS) {
            return false;
        }
        long switches = involuntarySwitches.getAsLong();
        boolean preempted = (switches - sampleSwitches) * PREEMPTED_WINDOWS_PER_SWITCH >= sampleWindows;
        if (preempted) {
            contendedSamples++;
        }
        openSample(now, switches);
        return preempted;
    }

    private void openSample(long now, long switches) {
        sampleOpen = true;
        sampleStartNs = now;
        sampleSwitches = switches;
        sampleWindows = 1;
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
            if (windowNs == 0) {
                sampleOpen = false; // the next sample starts when polling does, not with this idle time in it
            }
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

    /** Samples whose involuntary switches stopped polling (a subset of {@link #preemptions()}). */
    long contendedSamples() {
        return contendedSamples;
    }

    @Override
    public String alias() {
        return "adaptive-poll";
    }
}
