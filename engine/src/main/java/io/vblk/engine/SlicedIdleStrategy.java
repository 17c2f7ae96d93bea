package io.vblk.engine;

import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;

/**
 * An I/O thread's idle strategy that also lets a {@link SliceGovernor} judge the thread's
 * scheduler slice: at the start of each wait (the first idle round after work) and every
 * {@link #BUSY_ROUNDS} rounds with work (a thread that never waits is judged too), one clock
 * read; the governor reads the kernel's statistics at most once per {@link SliceGovernor#SAMPLE_NS}.
 */
final class SlicedIdleStrategy implements IdleStrategy {
    /** Rounds with work between two looks at the clock when the thread does not wait. */
    static final int BUSY_ROUNDS = 64;

    private final IdleStrategy delegate;
    private final SliceGovernor governor;
    private final NanoClock clock;
    private boolean waiting;
    private int busyRounds;

    SlicedIdleStrategy(IdleStrategy delegate, SliceGovernor governor, NanoClock clock) {
        this.delegate = delegate;
        this.governor = governor;
        this.clock = clock;
    }

    @Override
    public void idle(int workCount) {
        if (workCount > 0) {
            waiting = false;
            if (++busyRounds >= BUSY_ROUNDS) {
                busyRounds = 0;
                governor.atIdle(clock.nanoTime());
            }
        } else if (!waiting) {
            waiting = true;
            busyRounds = 0;
            governor.atIdle(clock.nanoTime());
        }
        delegate.idle(workCount);
    }

    @Override
    public void idle() {
        if (!waiting) {
            waiting = true;
            busyRounds = 0;
            governor.atIdle(clock.nanoTime());
        }
        delegate.idle();
    }

    @Override
    public void reset() {
        delegate.reset();
    }

    /** The strategy it wraps. */
    IdleStrategy delegate() {
        return delegate;
    }

    /** The governor it feeds. */
    SliceGovernor governor() {
        return governor;
    }

    @Override
    public String alias() {
        return delegate.alias() + "+slice";
    }
}
