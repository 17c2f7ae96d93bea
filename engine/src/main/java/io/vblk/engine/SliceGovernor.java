package io.vblk.engine;

/**
 * Gives an I/O thread a short scheduler slice ({@link Tuning#schedSliceNs()}) only while it
 * pays, and the kernel's default slice otherwise. Under EEVDF a thread with a short slice
 * preempts a busy thread when it wakes instead of waiting out that thread's protected slice
 * (1.4 ms by default here); but a thread that runs long stretches with a short slice is itself
 * cut off every slice while another thread waits for its CPU.
 *
 * <p>So it reads the thread's own scheduler statistics ({@code /proc/thread-self/schedstat}:
 * time on a CPU, time runnable on a run queue) once per sample of at least {@link #SAMPLE_NS},
 * never per request, and judges each sample:
 * <ul>
 * <li><b>Wants the slice</b>: the thread lost {@link #DELAY_SHARE_ON} of the wall time or more
 *     waiting for a CPU, while it ran less than {@link #RUN_SHARE_MAX} of it (it mostly sleeps
 *     in the kernel and wakes for short rounds: each wake-up is what waits behind a busy
 *     thread). {@link #ON_SAMPLES} such samples in a row shorten the slice.
 * <li><b>Polls</b>: it ran {@link #RUN_SHARE_MAX} of the wall time or more (its idle strategy
 *     spins). A short slice would cut each poll short whenever another thread waits for the
 *     CPU, so one such sample restores the default slice at once.
 * <li><b>Uncontended</b>: less than {@link #DELAY_SHARE_OFF} lost on a run queue. The slice
 *     goes back to the default once the samples have stayed so for {@link #HOLD_NS}: the short
 *     slice itself shrinks the time lost, so the bar to give it up is lower than the bar to
 *     take it, and held, so that it does not flap.
 * </ul>
 * Owned by one thread (it changes the calling thread's slice); allocation-free.
 */
final class SliceGovernor {
    /** The thread's scheduler statistics so far, read on the thread itself. */
    interface Schedstat {
        /** Reads them; false when they cannot be read (the governor then does nothing more). */
        boolean read();

        /** Time on a CPU so far, as of the last read. */
        long runNs();

        /** Time runnable on a run queue so far, as of the last read. */
        long delayNs();
    }

    /** Changes the calling thread's slice. */
    interface SliceControl {
        /** Asks for a slice of {@code sliceNs}; 0 when the kernel took it, else {@code -errno}. */
        long request(long sliceNs);

        /** The kernel's default slice again; 0 or {@code -errno}. */
        long reset();
    }

    /** The shortest stretch of wall time one judgement covers. */
    static final long SAMPLE_NS = 10_000_000;
    /** The share of wall time lost on a run queue at or above which a sleeping thread wants the short slice. */
    static final double DELAY_SHARE_ON = 0.05;
    /** The share below which the time lost no longer counts as contention (see {@link #HOLD_NS}). */
    static final double DELAY_SHARE_OFF = 0.02;
    /** The share of wall time on a CPU at or above which the thread counts as polling. */
    static final double RUN_SHARE_MAX = 0.5;
    /** Samples in a row that want the slice before it is shortened. */
    static final int ON_SAMPLES = 2;
    /** How long the samples must stay uncontended before the default slice comes back. */
    static final long HOLD_NS = 200_000_000;

    private final long sliceNs;
    private final Schedstat stat;
    private final SliceControl control;
    private boolean primed;
    private boolean broken;
    private long lastNs;
    private long lastRunNs;
    private long lastDelayNs;
    private boolean shortened;
    private int wanting;
    private boolean clearRun;
    private long clearSinceNs;
    private long shortenings;
    private long restores;

    SliceGovernor(long sliceNs, Schedstat stat, SliceControl control) {
        this.sliceNs = sliceNs;
        this.stat = stat;
        this.control = control;
    }

    /** How it changes the slice. */
    SliceControl control() {
        return control;
    }

    /** The short slice it asks for. */
    long sliceNs() {
        return sliceNs;
    }

    /**
     * Called on the thread now and then (at the start of a wait, and every so many busy rounds)
     * with the time: judges a sample once at least {@link #SAMPLE_NS} has passed since the last.
     */
    void atIdle(long nowNs) {
        if (broken || primed && nowNs - lastNs < SAMPLE_NS) {
            return;
        }
        if (!stat.read()) {
            broken = true;
            if (shortened) {
                restore();
            }
            return;
        }
        long run = stat.runNs();
        long delay = stat.delayNs();
        if (!primed) {
            primed = true;
        } else {
            judge(nowNs, run - lastRunNs, delay - lastDelayNs, nowNs - lastNs);
        }
        lastNs = nowNs;
        lastRunNs = run;
        lastDelayNs = delay;
    }

    private void judge(long nowNs, long runNs, long delayNs, long wallNs) {
        boolean polls = runNs >= RUN_SHARE_MAX * wallNs;
        boolean wants = !polls && delayNs >= DELAY_SHARE_ON * wallNs;
        if (!shortened) {
            wanting = wants ? wanting + 1 : 0;
            if (wanting >= ON_SAMPLES) {
                wanting = 0;
                clearRun = false;
                if (control.request(sliceNs) == 0) {
                    shortened = true;
                    shortenings++;
                } else {
                    broken = true; // a kernel without custom slices, or a real-time thread: never again
                }
            }
            return;
        }
        if (polls) {
            restore();
            return;
        }
        if (delayNs >= DELAY_SHARE_OFF * wallNs) {
            clearRun = false;
            return;
        }
        if (!clearRun) {
            clearRun = true;
            clearSinceNs = nowNs - wallNs; // the clear stretch began where this sample did
        }
        if (nowNs - clearSinceNs >= HOLD_NS) {
            restore();
        }
    }

    private void restore() {
        control.reset();
        shortened = false;
        clearRun = false;
        wanting = 0;
        restores++;
    }

    /** Whether the thread runs with the short slice now. */
    boolean shortened() {
        return shortened;
    }

    /** How often the slice was shortened. */
    long shortenings() {
        return shortenings;
    }

    /** How often the default slice came back. */
    long restores() {
        return restores;
    }
}
