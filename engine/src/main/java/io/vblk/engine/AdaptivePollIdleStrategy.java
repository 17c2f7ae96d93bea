package io.vblk.engine;

import java.util.function.IntSupplier;
import java.util.function.LongSupplier;

import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;

/**
 * Polls for a window after the last work, then sleeps in the kernel ({@link WaitStrategy#ADAPTIVE}),
 * with a window that pays for itself. Polling catches the next request of a busy guest without a
 * kick or a wake-up; it is worth it only while wake-ups come soon after the window would have
 * ended, and only while the thread has a core to itself most of the time.
 *
 * <ul>
 * <li><b>Grow</b> (QEMU's poll-grow): the wait ended (in the kernel) later than the window but
 *     within {@code maxPollNs}: a longer window would have caught it; double it (from 4 us).
 * <li><b>Shrink</b> (poll-shrink): the wait lasted longer than {@code maxPollNs}, so the poll
 *     was wasted CPU: halve it (below 4 us: 0, block at once).
 * <li><b>Hand the core over when it was taken</b>: a gap of more than {@link #PREEMPTED_GAP_NS}
 *     between two idle rounds means the thread lost its core while polling: another runnable
 *     thread needed it, perhaps the guest this one waits for. The window drops to 0 and the
 *     thread sleeps in the kernel for this wait; a kick (notifications are re-enabled before
 *     sleeping) brings it back with the scheduler's wake-up preference, and the window regrows
 *     with the next short waits. That is all one gap does: on a machine that is otherwise idle
 *     a JIT compiler thread, a GC or another process's burst takes the core now and then, and
 *     a thread that also stopped polling for a back-off after each of them (as this class did
 *     until 2026-12-05) spent most of its time blocking: 177k-618k IOPS at depth 1 where
 *     busy-spinning made 640k-760k, one back-off doubling the last up to a second.
 * <li><b>Yield when the core is shared for good</b>: the time lost in gaps is summed per sample
 *     of polling (below) and the share of polling time it makes is averaged over about {@link
 *     #LOST_TAU_NS}: when it reaches {@link #LOST_SHARE_CONTENDED} (two competing busy loops on
 *     two cores take half of it; one takes a third, and polling still paid there) the thread
 *     stops polling for a back-off ({@link #CONTENDED_BACKOFF_NS}, doubling up to {@link
 *     #MAX_CONTENDED_BACKOFF_NS} while contention keeps being found within a back-off of the
 *     last: a host with steady competition ends up blocking), during which the window does not
 *     regrow. A plain {@code sched_yield} while polling measured far worse (depth 1, guest
 *     polling, loaded host: p50 3.9 ms against 0.12 ms for a fixed window): the yielding thread
 *     queues behind every runnable thread while the guest's kicks stay suppressed, so nothing
 *     brings it back early.
 * <li><b>Unless polling serves the guest faster than blocking did</b>: each contended back-off
 *     measures the work the thread did per unit of time while it blocked (the guest's kicks
 *     waking it), and polling measures the same over its samples (averaged over about {@link
 *     #POLL_RATE_TAU_NS}). When a sample is found contended (either rule above, or the next)
 *     while polling has done at least {@link #POLL_PAYS_FACTOR} times the work per unit of time
 *     of the last back-off, measured within {@link #BLOCK_RATE_TTL_NS} and over at least {@link
 *     #MIN_RATE_WORK} units of work, polling goes on: the competition is there, but it takes a
 *     core the guest does not need. The case: depth 1, a polling guest, two busy loops on two
 *     cores (the contention table's one cell vblk kept missing). The guest and the I/O thread
 *     each share a core with a busy loop; polling serves a request in about a microsecond
 *     whenever both are on their cores, blocking costs a kick and a wake-up (4-5 us on this
 *     VM) for every request, and only while the guest is on its core. Measured 2026-12-06
 *     18:16-18:21 the cell had two modes, 300-380k IOPS at p50 1.0-1.3 us and 1.0-1.3 us of CPU
 *     per I/O (the CPU per I/O of a thread that polls all the time it runs) and 95-170k at p50
 *     3-6 us and 2.4-4 us of CPU (a wake-up per request, as qemu-storage-daemon with {@code
 *     poll-max-ns=0} in the same cell): the lost-share rule put the thread in the slow one
 *     whenever it saw half of its polling time lost. After a back-off that measured blocking,
 *     polling is on trial for {@link #POLL_TRIAL_NS}: contention found meanwhile does not stop
 *     it, and its rate over the whole trial is what is compared at the first contended sample
 *     after it. A one-millisecond sample is shorter than the scheduler's slices: judged alone,
 *     the first sample after a back-off stopped polling whenever it fell in a stretch where the
 *     guest (or this thread) was off its core, and each such verdict doubled the back-off; a
 *     trial that does not pay costs at most {@link #POLL_TRIAL_NS} of polling per back-off, and
 *     its verdict doubles the back-off as contention found within it would. Once the last back-off is older than {@link
 *     #BLOCK_RATE_TTL_NS}, a contended sample backs off again (for {@link
 *     #CONTENDED_BACKOFF_NS}: it is not found again within a back-off) and so measures blocking
 *     anew; a back-off with too little work to measure (an idle guest) leaves the rules as they
 *     were. Work is what the rounds report ({@code idle(workCount)}), counted without a clock read,
 *     and only while the rule is on: off, neither the work nor either rate is kept.
 *     <b>Off by default</b> ({@link IdleStrategies#POLL_PAYS}, {@code -Dvblk.adaptive.pollPays=true}):
 *     not yet measured on a machine quiet enough to show the two modes.
 * <li><b>Yield when the scheduler keeps taking the core</b>: a preemption shorter than the gap
 *     above (the guest thread this one just interrupted runs 10-20 us on its core, then sleeps)
 *     leaves no visible gap, yet it is the common case on a host with one runnable thread too
 *     many: every poll is cut short by the guest it serves, and the request that guest posts
 *     meanwhile waits, unkicked, until the scheduler hands the core back (a p99 of 116 us
 *     against 35 us sleeping in the kernel, and twice the CPU per I/O). So the thread counts
 *     its involuntary context switches (one {@code getrusage} per sample of at least {@link
 *     #SAMPLE_NS}, never per request): when at least one poll window in {@link
 *     #PREEMPTED_WINDOWS_PER_SWITCH} of a sample was matched by an involuntary switch (and the
 *     sample has at least {@link #MIN_SAMPLE_SWITCHES}), it stops polling as above. A sample
 *     that long waits cut short (they shrank the window to 0 first: a guest that sleeps between
 *     requests and wakes on this core makes them long too) is judged when the window shuts,
 *     else it would never be judged at all.
 * <li><b>Poll for requests, not for completions</b>: a wait that starts with {@link
 *     #DEEP_IN_FLIGHT} or more operations in flight goes to the kernel at once and leaves the
 *     window alone. The next event there is almost always one of those completions, which the
 *     completion eventfd signals anyway; while the wake-up takes its time the device stays busy
 *     with the rest and more completions gather, so each round reaps a bigger batch. Polling
 *     there catches a completion every few microseconds, one small round each: at depth 128 on
 *     a file the rules that kept polling there cost 0.5-1 us of CPU per I/O against rules that
 *     happened to sleep there (the bisect of 2026-12-05). A wait with few or no operations in
 *     flight waits for the guest's next request (or for a completion a shallow queue's latency
 *     hangs on): that is what the window is for, and only those waits size it.
 * <li><b>Stop polling that catches nothing</b>: a sample (as above) whose windows caught work
 *     fewer than once per {@link #UNPAID_WINDOWS_PER_CATCH}, while polling took at least half
 *     of its time, shuts the window for {@link #UNPAID_BACKOFF_NS} (never doubled). The case:
 *     the guest's thread waits for this thread's core (the scheduler put both on one core, and
 *     a polling guest's spin is no wake-up that preempts), so it can only post, or see the
 *     completion just made, once this thread sleeps. Every wait then ends just after its
 *     window, whatever its length, and QEMU's rule alone grows the window to the maximum and
 *     keeps it between half of it and all of it: every I/O polls 50-100 us for nothing, and the
 *     guest sees each completion that much later. No gap and no involuntary switch shows it;
 *     only that polling never catches anything. Small windows that miss while the thread
 *     mostly sleeps cost little and are left to grow and shrink.
 * <li><b>Poll only for a guest that answers at once while the machine is oversubscribed</b>:
 *     at the start of a wait, at most once per {@link #SAMPLE_NS}, the thread reads its own run
 *     delay (the time it spent runnable but waiting for a CPU, {@link ThreadRunDelay}), whether
 *     it polled meanwhile or slept. When that delay grew by {@link #RUN_DELAY_SHARE_OVERSUBSCRIBED}
 *     of the wall time or more, more threads want the CPUs than there are, and every microsecond
 *     spun is taken from one of them (perhaps from the guest the thread waits for). Then the
 *     window is at most {@link #OVERSUBSCRIBED_WINDOW_NS}: long enough for a polling guest's next
 *     request, which follows the completion within a microsecond or two, too short to spin
 *     through a blocking guest's wake-up. A window that still misses shuts (the next request
 *     needed a wake-up anyway) and reopens only after {@link #OVERSUBSCRIBED_MISS_BACKOFF_NS}.
 *     Why: depth 1, guest blocking, two competing busy loops on two cores (the contention
 *     table's cell vblk kept missing against qsd with {@code poll-max-ns=0}). Measured
 *     2026-12-05 22:14-22:17 ({@code vblk bench --compare --only contention --contention-cell
 *     qd1-block:2}): the I/O thread spent 24-41% of the wall time on a run queue even while
 *     blocking, with 10-18k involuntary switches a second; the rules above kept the window shut
 *     most of the time, but each back-off's end let it regrow to 32-100 us (95-167 grows per
 *     half second in those stretches) until a sample of mostly-polling judged it again, about
 *     five times a second. None of the rules above could see the oversubscription without
 *     polling first, and the lost-share rule saw none at all (share 0.00-0.01: the preemptions
 *     come at wake-ups, not as gaps while polling). <b>Off by default</b> ({@link
 *     IdleStrategies#RUN_DELAY}): with it on, that cell measured no better than without it, the
 *     run-delay reads flicker at one-millisecond intervals, and shutting a polling guest's window
 *     at its first miss cost depth 1 with the guest polling most of its IOPS (79k against 834k
 *     on a machine loaded by other work); the rule above holds the state for {@link
 *     #OVERSUBSCRIBED_HOLD_NS} and shuts after {@link #OVERSUBSCRIBED_MISSES_TO_SHUT} misses since.
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
    /** How long the window stays shut after polling was found contended. */
    static final long CONTENDED_BACKOFF_NS = 20_000_000;
    /** The longest back-off, reached by contention found again and again. */
    static final long MAX_CONTENDED_BACKOFF_NS = 1_000_000_000;
    /** The shortest stretch of polling over which involuntary switches and lost time are counted. */
    static final long SAMPLE_NS = 1_000_000;
    /** Poll windows a sample needs before its switch count says anything. */
    static final int MIN_SAMPLE_WINDOWS = 8;
    /** One involuntary switch per this many poll windows (or more) means the core is contended. */
    static final int PREEMPTED_WINDOWS_PER_SWITCH = 4;
    /**
     * Involuntary switches a sample needs before their ratio to windows says anything: a few
     * switches (another process's burst, a JIT thread) over a sample with few windows (a guest
     * that was itself off the core) make the ratio without saying anything.
     */
    static final int MIN_SAMPLE_SWITCHES = 8;
    /** A sample open this long without enough windows is dropped (its switches may not be polling's). */
    static final long STALE_SAMPLE_NS = 64 * SAMPLE_NS;
    /** The polling time over which the share lost in gaps is averaged (a sample weighs its polling and lost time over this). */
    static final long LOST_TAU_NS = 16_000_000;
    /** The averaged share of polling time lost in gaps at which polling stops. */
    static final double LOST_SHARE_CONTENDED = 0.45;
    /**
     * Where the averaged share restarts after polling stopped: below the threshold, so that
     * polling that finds no loss after the back-off goes on, and near it, so that polling that
     * finds the competition still there stops again within a few samples.
     */
    static final double LOST_SHARE_AFTER_BACKOFF = 0.40;

    /**
     * Operations in flight at or above which a wait goes to the kernel at once: the next event is
     * most likely one of their completions, which the completion eventfd signals anyway, and the
     * device stays busy with the rest while the wake-up takes its time.
     */
    static final int DEEP_IN_FLIGHT = 8;
    /**
     * A sample whose windows caught work fewer than once per this many, polling at least half of
     * its time, did not pay for its polling.
     */
    static final int UNPAID_WINDOWS_PER_CATCH = 32;
    /**
     * How long the window stays shut after a sample that did not pay; never doubled: the guest
     * that waited for this core may have moved to another one since, and then every I/O of a
     * longer back-off pays a wake-up, where a probe after this one costs at most a sample.
     */
    static final long UNPAID_BACKOFF_NS = CONTENDED_BACKOFF_NS;

    /**
     * How many times the work per unit of time of the last contended back-off polling must do for
     * a contended sample to go on polling: a clear margin, so that two regimes serving alike (a
     * guest that asks for less than either could serve) keep the rules that free the core.
     */
    static final double POLL_PAYS_FACTOR = 1.5;
    /** How long a back-off's measured rate stands: after it, contention backs off once more to measure blocking again. */
    static final long BLOCK_RATE_TTL_NS = 500_000_000;
    /** The least work a back-off must have done for its rate to stand (fewer: the guest was idle, the rate says nothing). */
    static final long MIN_RATE_WORK = 64;
    /** The wall time over which polling's work per unit of time is averaged (as a sample weighs its wall time over this). */
    static final long POLL_RATE_TAU_NS = 16_000_000;
    /**
     * How long polling runs after a back-off that measured blocking's rate before contention may
     * stop it again, its rate taken over all of that time: one sample (a millisecond) is shorter
     * than the scheduler's slices, so it can fall wholly in a stretch where the guest is off its
     * core and serve nothing, and judged alone it stopped polling that pays (and doubled the
     * back-off, leaving few chances in a second).
     */
    static final long POLL_TRIAL_NS = POLL_RATE_TAU_NS;

    /** The share of wall time spent waiting on a run queue at or above which the machine is oversubscribed. */
    static final double RUN_DELAY_SHARE_OVERSUBSCRIBED = 0.10;
    /** The longest window while oversubscribed: a polling guest's next request, not a blocking guest's wake-up. */
    static final long OVERSUBSCRIBED_WINDOW_NS = GROW_START_NS;
    /**
     * How long the run delay must stay below {@link #RUN_DELAY_SHARE_OVERSUBSCRIBED} before the
     * machine counts as no longer oversubscribed: one millisecond's read flickers (measured:
     * reads alternating on a machine with a load of 8, each clear one regrowing the window to
     * 32-64 us), the competition does not come and go that fast.
     */
    static final long OVERSUBSCRIBED_HOLD_NS = 50_000_000;
    /**
     * Misses in a row of the small window, while oversubscribed, that shut it: a polling guest's
     * window misses now and then (the guest lost its core for a moment; the 2026-12-05 22:33 table,
     * which shut it at the first miss, fell from 834k to 79k IOPS at depth 1 with the guest
     * polling on a machine with a load of 7), a blocking guest's misses every time.
     */
    static final int OVERSUBSCRIBED_MISSES_TO_SHUT = 8;
    /** How long a window that missed {@link #OVERSUBSCRIBED_MISSES_TO_SHUT} times in a row while oversubscribed stays shut. */
    static final long OVERSUBSCRIBED_MISS_BACKOFF_NS = 5_000_000;

    private final NanoClock clock;
    private final long maxPollNs;
    /** The back end's operations in flight (read once per wait, at its start). */
    private final IntSupplier inFlight;
    private final int deepInFlight;
    private final KernelSleep sleeper;
    /** The thread's involuntary context switches so far ({@code getrusage(RUSAGE_THREAD)}). */
    private final LongSupplier involuntarySwitches;
    /** The thread's run delay so far in ns ({@link ThreadRunDelay}), negative when unknown. */
    private final LongSupplier runDelay;
    private long runDelayReadNs;
    private long lastRunDelayNs = -1;
    private boolean oversubscribed;
    /** When the reads started to find the machine no longer oversubscribed (valid while {@link #clearRun}). */
    private long clearSinceNs;
    private boolean clearRun;
    private long oversubscribedMissUntilNs;
    private long oversubscribedReads;
    private long oversubscribedMisses;
    /** Misses in a row of the small window while oversubscribed. */
    private int oversubscribedMissStreak;
    private long windowNs;
    private boolean polling;
    private long pollStartNs;
    private long lastRoundNs;
    private long contendedUntilNs;
    private long unpaidUntilNs;
    private long backoffNs = CONTENDED_BACKOFF_NS;
    private long sleeps;
    private long deepWaits;
    private long grows;
    private long shrinks;
    private long preemptions;
    private long contendedSamples;
    private long lostSamples;
    private long unpaidSamples;
    private long gaps;
    /** The averaged share of polling time lost in gaps (0 to 1). */
    private double lostShare;
    /** A sample is open: it started at {@link #sampleStartNs} with {@link #sampleSwitches}. */
    private boolean sampleOpen;
    private long sampleStartNs;
    private long sampleSwitches;
    private int sampleWindows;
    /** Windows of the sample that caught work without a sleep. */
    private int sampleCatches;
    private long sampleLostNs;
    /** Time spent polling (on the core) in the sample: the share lost is of polling time, not of wall time. */
    private long samplePolledNs;
    /** Work reported by the rounds so far ({@code idle(workCount)}), summed without a clock read. */
    private long work;
    /** {@link #work} when the open sample started. */
    private long sampleWork;
    /** Polling's work per ns, averaged over its samples since the last back-off (NaN: none judged yet). */
    private double pollRate = Double.NaN;
    /** A contended back-off is running and measuring the work done while blocking. */
    private boolean measuringBackoff;
    private long backoffStartNs;
    private long backoffWork;
    /** The last back-off's work per ns (NaN: none measured), and when it was measured. */
    private double blockRate = Double.NaN;
    private long blockRateAtNs;
    /** Polling is on trial after a measured back-off: since {@link #trialStartNs}, with {@link #trialWork} done before it. */
    private boolean pollTrial;
    private long trialStartNs;
    private long trialWork;
    private long trialContendedSamples;
    /** The back-off a trial followed (0: none), so that a trial's verdict counts as contention found again within it. */
    private long trialAfterBackoffNs;
    private long paidContendedSamples;
    /** Whether contention is weighed against the last back-off's rate ({@link IdleStrategies#POLL_PAYS}). */
    private boolean comparesRates = true;

    /** As below, without the switch count: only gaps between rounds show a preemption. */
    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper) {
        this(clock, initialPollNs, maxPollNs, sleeper, () -> 0);
    }

    /** As below, with nothing ever in flight: every wait may poll. */
    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper,
                             LongSupplier involuntarySwitches) {
        this(clock, initialPollNs, maxPollNs, sleeper, involuntarySwitches, () -> 0, DEEP_IN_FLIGHT);
    }

    /**
     * @param involuntarySwitches the calling thread's involuntary context switches so far (read
     *                            at most once per {@link #SAMPLE_NS} of polling, on this thread)
     * @param inFlight            the back end's operations in flight (read once per wait, at its start)
     * @param deepInFlight        operations in flight at or above which a wait does not poll
     */
    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper,
                             LongSupplier involuntarySwitches, IntSupplier inFlight, int deepInFlight) {
        this(clock, initialPollNs, maxPollNs, sleeper, involuntarySwitches, inFlight, deepInFlight, () -> -1);
    }

    /**
     * @param runDelay the calling thread's run delay so far in ns, negative when unknown (read at
     *                 most once per {@link #SAMPLE_NS}, at the start of a wait, on this thread)
     */
    AdaptivePollIdleStrategy(NanoClock clock, long initialPollNs, long maxPollNs, KernelSleep sleeper,
                             LongSupplier involuntarySwitches, IntSupplier inFlight, int deepInFlight, LongSupplier runDelay) {
        if (initialPollNs < 0 || maxPollNs < 0) {
            throw new IllegalArgumentException("poll " + initialPollNs + " ns, max " + maxPollNs + " ns: must not be negative");
        }
        this.clock = clock;
        this.maxPollNs = maxPollNs;
        this.sleeper = sleeper;
        this.involuntarySwitches = involuntarySwitches;
        this.inFlight = inFlight;
        this.deepInFlight = deepInFlight;
        this.runDelay = runDelay;
        this.runDelayReadNs = clock.nanoTime();
        this.windowNs = Math.min(initialPollNs, maxPollNs);
        this.contendedUntilNs = clock.nanoTime() - MAX_CONTENDED_BACKOFF_NS; // no back-off running
        this.unpaidUntilNs = clock.nanoTime();
    }

    @Override
    public void idle(int workCount) {
        if (workCount > 0) {
            if (comparesRates) {
                work += workCount; // only the rate comparison reads it: nothing per round when it is off
            }
            if (polling && windowNs > 0) {
                sampleCatches++;
                oversubscribedMissStreak = 0;
            }
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
            if (measuringBackoff && now - contendedUntilNs >= 0) {
                measureBackoff(now);
            }
            if (now - runDelayReadNs >= SAMPLE_NS) {
                readRunDelay(now);
            }
            if (maxPollNs > 0 && inFlight.getAsInt() >= deepInFlight) {
                deepWaits++;
                sleep(false);
                return;
            }
            if (windowNs > 0 && sampleWindow(now)) {
                sleep(false); // polling stopped for a back-off (contended, or unpaid)
                return;
            }
        } else if (now - lastRoundNs > PREEMPTED_GAP_NS) {
            // The core was taken while polling: someone else needed it (perhaps the guest this
            // thread waits for). Hand it over for this wait: the window shuts and regrows with
            // the next short waits (one wake-up's cost when it was noise), and the lost time is
            // charged to the sample, whose average decides whether to stop polling for longer.
            gaps++;
            if (sampleOpen) {
                sampleLostNs += now - lastRoundNs;
            }
            if (windowNs > 0) {
                shrinks++;
                windowNs = 0;
            }
            lastRoundNs = now;
            sleep(false);
            return;
        }
        if (now != pollStartNs) {
            samplePolledNs += now - lastRoundNs;
        }
        lastRoundNs = now;
        if (now - pollStartNs >= windowNs) {
            sleep(true);
        } else {
            Thread.onSpinWait();
        }
    }

    /**
     * Reads the thread's run delay and judges the interval since the last read: oversubscribed
     * when the delay grew by {@link #RUN_DELAY_SHARE_OVERSUBSCRIBED} of it or more. Then a
     * longer window is cut to {@link #OVERSUBSCRIBED_WINDOW_NS}.
     */
    private void readRunDelay(long now) {
        long delay = runDelay.getAsLong();
        long wallNs = now - runDelayReadNs;
        if (delay >= 0 && lastRunDelayNs >= 0) {
            if ((delay - lastRunDelayNs) >= RUN_DELAY_SHARE_OVERSUBSCRIBED * wallNs) {
                oversubscribed = true;
                clearRun = false;
            } else if (oversubscribed) {
                if (!clearRun) {
                    clearRun = true;
                    clearSinceNs = runDelayReadNs; // the clear interval started at the last read
                }
                oversubscribed = now - clearSinceNs < OVERSUBSCRIBED_HOLD_NS;
            }
            if (oversubscribed) {
                oversubscribedReads++;
                if (windowNs > OVERSUBSCRIBED_WINDOW_NS) {
                    shrinks++;
                    windowNs = OVERSUBSCRIBED_WINDOW_NS;
                }
            }
        } else {
            oversubscribed = false;
            clearRun = false;
        }
        lastRunDelayNs = delay;
        runDelayReadNs = now;
    }

    /**
     * The back-off that ended: its work per ns stands when it did enough work to say anything
     * (an idle guest's back-off leaves the last rate, or none, as it was).
     */
    private void measureBackoff(long now) {
        measuringBackoff = false;
        long done = work - backoffWork;
        if (done >= MIN_RATE_WORK && now > backoffStartNs) {
            blockRate = done / (double) (now - backoffStartNs);
            blockRateAtNs = now;
            pollTrial = true;
            trialStartNs = now;
            trialWork = work;
            trialAfterBackoffNs = backoffNs;
        }
    }

    /** Whether polling, contended as it is, has served clearly more work per unit of time than the last back-off's blocking. */
    private boolean pollingPays(long now) {
        return comparesRates && !Double.isNaN(blockRate) && !Double.isNaN(pollRate) && now - blockRateAtNs < BLOCK_RATE_TTL_NS
                && pollRate >= POLL_PAYS_FACTOR * blockRate;
    }

    /**
     * Polling was found contended: shut the window and start (or double) the back-off, unless
     * polling pays; returns whether it stopped polling.
     */
    private boolean contended(long now) {
        if (pollTrial && now - trialStartNs < POLL_TRIAL_NS) { // shrink() may come after the trial's end, before a sample closes it
            trialContendedSamples++; // judged when the trial's rate is in
            lostShare = Math.min(lostShare, LOST_SHARE_AFTER_BACKOFF);
            return false;
        }
        if (pollingPays(now)) {
            paidContendedSamples++;
            lostShare = Math.min(lostShare, LOST_SHARE_AFTER_BACKOFF);
            backoffNs = CONTENDED_BACKOFF_NS; // the next back-off measures blocking again: no doubling
            return false;
        }
        preemptions++;
        if (comparesRates) {
            measuringBackoff = true;
            backoffStartNs = now;
            backoffWork = work;
            pollRate = Double.NaN; // polling's rate after this back-off is measured afresh
        }
        if (windowNs > 0) {
            shrinks++;
            windowNs = 0;
        }
        sampleOpen = false;
        lostShare = Math.min(lostShare, LOST_SHARE_AFTER_BACKOFF);
        // Contended again within a back-off of the last one ending (and the trial after it, when
        // there was one): the competition is steady.
        long steadyWithinNs = backoffNs + (trialAfterBackoffNs == backoffNs ? POLL_TRIAL_NS : 0);
        trialAfterBackoffNs = 0;
        backoffNs = now - contendedUntilNs < steadyWithinNs ? Math.min(MAX_CONTENDED_BACKOFF_NS, backoffNs * 2)
                : CONTENDED_BACKOFF_NS;
        contendedUntilNs = now + backoffNs;
        return true;
    }

    /**
     * Counts a poll window starting at {@code now} into the sample; at the end of a sample (at
     * least {@link #SAMPLE_NS} and {@link #MIN_SAMPLE_WINDOWS} windows) reads the switch count
     * once, folds the time lost in gaps into the averaged share, and stops polling for a
     * back-off when it is contended (the windows were preempted often enough, or the share
     * reached {@link #LOST_SHARE_CONTENDED}) or did not pay (next to nothing caught). Returns
     * whether it stopped. The same read opens the next sample.
     */
    private boolean sampleWindow(long now) {
        if (!sampleOpen || now - sampleStartNs > STALE_SAMPLE_NS) {
            openSample(now, involuntarySwitches.getAsLong());
            return false;
        }
        sampleWindows++;
        long wallNs = now - sampleStartNs;
        if (wallNs < SAMPLE_NS || sampleWindows < MIN_SAMPLE_WINDOWS) {
            return false;
        }
        long switches = involuntarySwitches.getAsLong();
        boolean preempted = preempted(switches - sampleSwitches, wallNs);
        long spentNs = sampleLostNs + samplePolledNs;
        if (spentNs > 0) {
            double share = sampleLostNs / (double) spentNs;
            lostShare += (share - lostShare) * spentNs / (double) (spentNs + LOST_TAU_NS);
        }
        boolean lost = lostShare >= LOST_SHARE_CONTENDED;
        // Most of the sample spent polling, and next to nothing caught: a window that misses
        // now and then, or misses while it is small, costs little and is left to grow and shrink.
        boolean unpaid = (long) sampleCatches * UNPAID_WINDOWS_PER_CATCH < sampleWindows && samplePolledNs * 2 >= wallNs;
        if (pollTrial) {
            // On trial: the rate over all of it so far; its end leaves that rate to be averaged on.
            pollRate = (work - trialWork) / (double) (now - trialStartNs);
            pollTrial = now - trialStartNs < POLL_TRIAL_NS;
        } else if (comparesRates) {
            double rate = (work - sampleWork) / (double) wallNs;
            pollRate = Double.isNaN(pollRate) ? rate : pollRate + (rate - pollRate) * wallNs / (double) (wallNs + POLL_RATE_TAU_NS);
        }
        openSample(now, switches);
        if ((preempted || lost) && contended(now)) {
            if (preempted) {
                contendedSamples++;
            } else {
                lostSamples++;
            }
            return true;
        }
        if (unpaid) {
            unpaidSamples++;
            if (windowNs > 0) {
                shrinks++;
                windowNs = 0;
            }
            sampleOpen = false;
            unpaidUntilNs = now + UNPAID_BACKOFF_NS;
            return true;
        }
        return false;
    }

    /** Whether the open sample's windows were cut short by the scheduler often enough to stop polling. */
    private boolean preempted(long switches, long wallNs) {
        return sampleWindows >= MIN_SAMPLE_WINDOWS && switches >= MIN_SAMPLE_SWITCHES
                && switches * PREEMPTED_WINDOWS_PER_SWITCH >= sampleWindows;
    }

    private void openSample(long now, long switches) {
        sampleOpen = true;
        sampleStartNs = now;
        sampleSwitches = switches;
        sampleWindows = 1;
        sampleCatches = 0;
        sampleLostNs = 0;
        samplePolledNs = 0;
        sampleWork = work;
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
        } else if (oversubscribed) {
            // Oversubscribed: a window that keeps missing shuts for a while; one shut reopens small.
            long now = clock.nanoTime();
            if (windowNs > 0) {
                if (++oversubscribedMissStreak >= OVERSUBSCRIBED_MISSES_TO_SHUT) {
                    oversubscribedMissStreak = 0;
                    oversubscribedMisses++;
                    shrinks++;
                    windowNs = 0;
                    oversubscribedMissUntilNs = now + OVERSUBSCRIBED_MISS_BACKOFF_NS;
                }
            } else if (now - oversubscribedMissUntilNs >= 0 && now - contendedUntilNs >= 0 && now - unpaidUntilNs >= 0) {
                grows++;
                windowNs = Math.min(OVERSUBSCRIBED_WINDOW_NS, maxPollNs);
            }
        } else if (windowNs < maxPollNs && clock.nanoTime() - contendedUntilNs >= 0 && clock.nanoTime() - unpaidUntilNs >= 0) {
            grows++;
            windowNs = windowNs == 0 ? Math.min(GROW_START_NS, maxPollNs) : Math.min(maxPollNs, windowNs * 2);
        }
    }

    private void shrink() {
        if (windowNs > 0) {
            shrinks++;
            windowNs = windowNs / 2 < GROW_START_NS ? 0 : windowNs / 2;
            if (windowNs == 0 && sampleOpen) {
                // Long waits shut the window before the sample reached its length: judge what it
                // has (a guest that sleeps between requests, waking on this thread's core, cuts
                // every window short and makes the waits long too), then close it: the next
                // sample starts when polling does, not with this idle time in it.
                long now = clock.nanoTime();
                if (preempted(involuntarySwitches.getAsLong() - sampleSwitches, now - sampleStartNs) && contended(now)) {
                    contendedSamples++;
                }
                sampleOpen = false;
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

    /** The back-off the last contended sample started. */
    long backoffNs() {
        return backoffNs;
    }

    /** How often polling was found contended and stopped. */
    long preemptions() {
        return preemptions;
    }

    /** Samples whose involuntary switches stopped polling (a subset of {@link #preemptions()}). */
    long contendedSamples() {
        return contendedSamples;
    }

    /** Samples whose averaged lost share stopped polling (the rest of {@link #preemptions()}). */
    long lostSamples() {
        return lostSamples;
    }

    /** Turns the comparison of polling's rate with the last back-off's on or off (on unless told); returns this. */
    AdaptivePollIdleStrategy comparingRates(boolean on) {
        comparesRates = on;
        return this;
    }

    /** Contended samples that went on polling because polling served more than the last back-off's blocking. */
    long paidContendedSamples() {
        return paidContendedSamples;
    }

    /** Contended samples that went on polling because polling was on trial after a back-off. */
    long trialContendedSamples() {
        return trialContendedSamples;
    }

    /** Whether polling is on trial after a back-off that measured blocking's rate. */
    boolean pollTrial() {
        return pollTrial;
    }

    /** The last back-off's work per ns while blocking (NaN: none measured). */
    double blockRate() {
        return blockRate;
    }

    /** Polling's work per ns averaged over its samples since the last back-off (NaN: none judged yet). */
    double pollRate() {
        return pollRate;
    }

    /** Gaps between idle rounds seen while polling (each charged to its sample, none acted on alone). */
    long gaps() {
        return gaps;
    }

    /** Samples whose windows caught too little work to pay for their polling (each shut the window for a back-off). */
    long unpaidSamples() {
        return unpaidSamples;
    }

    /** Waits that started with a deep queue in flight and went to the kernel at once. */
    long deepWaits() {
        return deepWaits;
    }

    /** Whether the last run-delay read found the machine oversubscribed. */
    boolean oversubscribed() {
        return oversubscribed;
    }

    /** Run-delay reads that found the machine oversubscribed. */
    long oversubscribedReads() {
        return oversubscribedReads;
    }

    /** Windows shut by misses in a row while oversubscribed (each for {@link #OVERSUBSCRIBED_MISS_BACKOFF_NS}). */
    long oversubscribedMisses() {
        return oversubscribedMisses;
    }

    /** The averaged share of polling time lost in gaps. */
    double lostShare() {
        return lostShare;
    }

    @Override
    public String alias() {
        return "adaptive-poll";
    }
}
