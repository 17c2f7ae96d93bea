package io.vblk.engine;

/**
 * How long an I/O thread waits for the guest's answer to published completions
 * ({@link Tuning#answerWindowNs()}), adapted to whether waiting pays (as QEMU grows and shrinks
 * its poll time): a wait that caught the guest's re-post opens the window to its bound, each wait
 * that closed empty halves it, and below a quarter of the bound it closes. A closed window is
 * opened again for one probe every {@link #PROBE_EVERY} publishes, so a guest that starts to
 * answer promptly is noticed. A guest that answers within the window keeps it open; one that
 * answers late (it waits for a CPU others hold) or not at all (its queue is drained) costs at
 * most three empty waits and then one in {@value #PROBE_EVERY} publishes. Not adaptive: every
 * publish waits the whole bound (the fixed window). Decisions only: the I/O thread does the
 * waiting and reports each wait's outcome; no clock, no allocation.
 */
final class AnswerWindow {
    /** A closed window waits once (the whole bound) in this many publishes. */
    static final int PROBE_EVERY = 16;

    private final long maxNs;
    private final boolean adaptive;
    /** The current window; 0 when closed. */
    private long windowNs;
    /** Publishes since the window closed (or since the last probe). */
    private int skipped;

    /**
     * @param maxNs    the bound (0: never wait)
     * @param adaptive whether the window adapts; false waits {@code maxNs} after every publish
     */
    AnswerWindow(long maxNs, boolean adaptive) {
        this.maxNs = maxNs;
        this.adaptive = adaptive;
        this.windowNs = maxNs;
    }

    /**
     * How long to wait for the guest's answer to the completions just published (0: do not
     * wait); called once per publish that found the back end deep.
     */
    long next() {
        if (!adaptive || windowNs > 0) {
            return windowNs;
        }
        if (++skipped >= PROBE_EVERY) {
            skipped = 0;
            return maxNs;
        }
        return 0;
    }

    /** The wait {@link #next()} asked for found the guest's answer (or other work): open it fully. */
    void caught() {
        windowNs = maxNs;
        skipped = 0;
    }

    /** The wait {@link #next()} asked for closed empty: halve the window, closing it below a quarter of the bound. */
    void missed() {
        if (!adaptive) {
            return;
        }
        long half = windowNs / 2;
        windowNs = half < maxNs / 4 || half == 0 ? 0 : half;
    }

    /** The current window (0: closed), for tests and diagnostics. */
    long windowNs() {
        return windowNs;
    }
}
