package io.vblk.engine;

/**
 * When a round publishes early to a guest that sleeps until interrupted ({@link
 * Tuning#earlySignal()}): after how many chains of one queue. The aim is a guest that wakes just
 * as the round ends, so that its wake-up (10-20 us of the kernel's on this machine) overlaps the
 * round rather than following it, and it finds the whole round's completions when it looks.
 *
 * <p>Fixed, or adaptive: each early publish is judged at the round's end. A guest that already
 * answered (re-posted, or re-armed its interrupt) was woken too early: it took a fraction and
 * will need a second wake-up, so the next round publishes later (a step up). A guest that has not
 * answered was woken late enough: the next publishes a little earlier (a smaller step down), so
 * the window keeps probing the point where the wake-up and the round's rest take as long. A
 * round too short to reach the point also steps it down. Between {@link #MIN_CHAINS} and the
 * ring's size; one per queue, I/O thread only, allocates nothing.
 */
final class EarlySignal {
    /** The earliest an adaptive window publishes: fewer chains are not worth a publish. */
    static final int MIN_CHAINS = 8;
    /** Where an adaptive window starts. */
    static final int START_CHAINS = 64;
    /** Chains added after a guest woke too early. */
    static final int STEP_UP = 16;
    /** Chains taken off after a guest woke late enough, or a round ended before the point. */
    static final int STEP_DOWN = 4;

    private final boolean adaptive;
    private final int max;
    private int chains;

    /**
     * @param setting {@link Tuning#earlySignal()}: N &gt; 0 fixed at N chains, {@link
     *                Tuning#EARLY_SIGNAL_ADAPTIVE} adaptive
     * @param ringSize the queue's size: the most one round pops of it
     */
    EarlySignal(int setting, int ringSize) {
        this.adaptive = setting == Tuning.EARLY_SIGNAL_ADAPTIVE;
        this.max = Math.max(MIN_CHAINS, ringSize);
        this.chains = adaptive ? Math.min(START_CHAINS, max) : setting;
    }

    /** After how many chains the next round publishes early. */
    int chains() {
        return chains;
    }

    /** A round ended before it popped {@link #chains()} chains. */
    void roundTooShort() {
        if (adaptive) {
            chains = Math.max(MIN_CHAINS, chains - STEP_DOWN);
        }
    }

    /** At the end of a round that published early: whether the guest had answered by then. */
    void judged(boolean guestAnswered) {
        if (!adaptive) {
            return;
        }
        chains = guestAnswered ? Math.min(max, chains + STEP_UP) : Math.max(MIN_CHAINS, chains - STEP_DOWN);
    }
}
