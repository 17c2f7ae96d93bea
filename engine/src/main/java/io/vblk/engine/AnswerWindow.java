package io.vblk.engine;

/**
 * Whether an I/O thread waits for the guest's answer to published completions
 * ({@link Tuning#answerWindowNs()}), adapted to whether waiting pays (as QEMU stops polling
 * that finds nothing): the window stays open while its waits catch the guest's re-post, closes
 * after {@value #CLOSE_AFTER} waits in a row that ran out, and while closed waits once (a probe)
 * in {@value #PROBE_EVERY} publishes; a probe that catches the answer opens it again. A guest
 * that answers late (it waits for a CPU others hold) or not at all (its queue is drained) so
 * costs {@value #CLOSE_AFTER} empty waits and then one in {@value #PROBE_EVERY} publishes. The
 * window is all or nothing: a shorter one would end before answers that come at a typical
 * delay (under load, the guest's re-post p50 20-30 us, not far below a 50 us bound), miss
 * more, and close for good. Not adaptive: every publish waits. Decisions only: the I/O thread
 * does the waiting and reports each wait's outcome; no clock, no allocation.
 */
final class AnswerWindow {
    /** An open window closes after this many waits in a row that ran out. */
    static final int CLOSE_AFTER = 4;
    /** A closed window waits once (a probe) in this many publishes. */
    static final int PROBE_EVERY = 16;

    private final long maxNs;
    private final boolean adaptive;
    private boolean open = true;
    /** Waits in a row that ran out while open. */
    private int misses;
    /** Publishes since the window closed (or since the last probe). */
    private int skipped;

    /**
     * @param maxNs    the window (0: never wait)
     * @param adaptive whether it closes while waits do not pay; false waits after every publish
     */
    AnswerWindow(long maxNs, boolean adaptive) {
        this.maxNs = maxNs;
        this.adaptive = adaptive;
    }

    /**
     * How long to wait for the guest's answer to the completions just published (0: do not
     * wait); called once per publish that found the back end deep.
     */
    long next() {
        if (!adaptive || open) {
            return maxNs;
        }
        if (++skipped >= PROBE_EVERY) {
            skipped = 0;
            return maxNs;
        }
        return 0;
    }

    /** The wait {@link #next()} asked for found the guest's answer (or other work): the window stays or becomes open. */
    void caught() {
        open = true;
        misses = 0;
        skipped = 0;
    }

    /** The wait {@link #next()} asked for ran out: a closed window stays closed, an open one closes after {@value #CLOSE_AFTER} in a row. */
    void missed() {
        if (adaptive && open && ++misses >= CLOSE_AFTER) {
            open = false;
            misses = 0;
            skipped = 0;
        }
    }

    /** The window the next publish would wait outside a probe (0: closed), for tests and diagnostics. */
    long windowNs() {
        return !adaptive || open ? maxNs : 0;
    }
}
