package io.vblk.engine;

import static io.vblk.engine.SliceGovernor.HOLD_NS;
import static io.vblk.engine.SliceGovernor.SAMPLE_NS;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.agrona.concurrent.CachedNanoClock;
import org.agrona.concurrent.IdleStrategy;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * {@link SliceGovernor}'s decisions, fed a fake {@code schedstat} under an injected clock, and
 * {@link SlicedIdleStrategy}'s sampling: the short slice only while the thread loses time on a
 * run queue and does not poll, the default back when it polls at once, and after a hold when
 * the contention is gone.
 */
class SliceGovernorTest {
    private final CachedNanoClock clock = new CachedNanoClock();
    /** Every change asked for, in order: the slice, or 0 for the default. */
    private final List<Long> changes = new ArrayList<>();
    private long runNs;
    private long delayNs;
    private int reads;
    private boolean readable = true;
    private long refuse;

    private final SliceGovernor.Schedstat stat = new SliceGovernor.Schedstat() {
        @Override
        public boolean read() {
            reads++;
            return readable;
        }

        @Override
        public long runNs() {
            return runNs;
        }

        @Override
        public long delayNs() {
            return delayNs;
        }
    };

    private final SliceGovernor.SliceControl control = new SliceGovernor.SliceControl() {
        @Override
        public long request(long sliceNs) {
            changes.add(sliceNs);
            return refuse;
        }

        @Override
        public long reset() {
            changes.add(0L);
            return 0;
        }
    };

    private final SliceGovernor governor = new SliceGovernor(100_000, stat, control);

    /** One sample of {@code wallNs} in which the thread ran {@code run} and waited {@code delay} (shares of the wall time). */
    private void sample(long wallNs, double run, double delay) {
        clock.advance(wallNs);
        runNs += (long) (run * wallNs);
        delayNs += (long) (delay * wallNs);
        governor.atIdle(clock.nanoTime());
    }

    private void samples(int n, double run, double delay) {
        for (int i = 0; i < n; i++) {
            sample(SAMPLE_NS, run, delay);
        }
    }

    @Test
    @DisplayName("a sleeping thread that loses time on the run queue gets the short slice after two samples in a row")
    void contendedSleeperShortens() {
        governor.atIdle(clock.nanoTime()); // the first read only primes
        samples(1, 0.2, 0.3);
        assertEquals(List.of(), changes, "one sample is not enough");
        samples(1, 0.2, 0.3);
        assertEquals(List.of(100_000L), changes);
        assertTrue(governor.shortened());
        samples(20, 0.2, 0.3);
        assertEquals(List.of(100_000L), changes, "asked once, kept while contended");
    }

    @Test
    @DisplayName("an uncontended thread, or a contended one that polls, keeps the default slice")
    void uncontendedOrPollingKeepsDefault() {
        governor.atIdle(clock.nanoTime());
        samples(50, 0.2, 0.01);
        samples(50, 0.9, 0.09); // polls with a CPU to spare: a short slice would cut its polls
        samples(50, 0.6, 0.4);  // polls and loses time: still cut by a short slice
        assertEquals(List.of(), changes);
        assertFalse(governor.shortened());
    }

    @Test
    @DisplayName("a contended sample between clear ones does not shorten (two in a row are needed)")
    void flickerDoesNotShorten() {
        governor.atIdle(clock.nanoTime());
        for (int i = 0; i < 20; i++) {
            samples(1, 0.2, 0.3);
            samples(1, 0.2, 0.0);
        }
        assertEquals(List.of(), changes);
    }

    @Test
    @DisplayName("the default slice comes back at once when the thread starts polling")
    void pollingRestoresAtOnce() {
        governor.atIdle(clock.nanoTime());
        samples(2, 0.2, 0.3);
        samples(1, 0.8, 0.1);
        assertEquals(List.of(100_000L, 0L), changes);
        assertFalse(governor.shortened());
    }

    @Test
    @DisplayName("the default slice comes back only after the contention has stayed away for the hold, not at a first clear sample")
    void clearForTheHoldRestores() {
        governor.atIdle(clock.nanoTime());
        samples(2, 0.2, 0.3);
        int holdSamples = (int) (HOLD_NS / SAMPLE_NS);
        samples(holdSamples - 1, 0.2, 0.0);
        samples(1, 0.2, 0.03); // still some time lost (above the lower bar): the clear stretch starts again
        samples(holdSamples - 1, 0.2, 0.0);
        assertEquals(List.of(100_000L), changes, "short slice held");
        samples(1, 0.2, 0.0);
        assertEquals(List.of(100_000L, 0L), changes, "clear for the whole hold: default again");
        samples(2, 0.2, 0.3);
        assertEquals(List.of(100_000L, 0L, 100_000L), changes, "and short again when the contention comes back");
    }

    @Test
    @DisplayName("the statistics are read at most once per sample, however often it is asked")
    void readsAtMostOncePerSample() {
        governor.atIdle(clock.nanoTime());
        for (int i = 0; i < 1000; i++) {
            clock.advance(SAMPLE_NS / 100);
            governor.atIdle(clock.nanoTime());
        }
        assertEquals(1 + 10, reads);
    }

    @Test
    @DisplayName("a kernel that refuses the slice is not asked again; unreadable statistics stop it, back at the default")
    void refusalsAndUnreadableStatsStopIt() {
        refuse = -22;
        governor.atIdle(clock.nanoTime());
        samples(20, 0.2, 0.3);
        assertEquals(List.of(100_000L), changes, "asked once, refused, never again");

        SliceGovernor other = new SliceGovernor(100_000, stat, control);
        refuse = 0;
        changes.clear();
        other.atIdle(clock.nanoTime());
        for (int i = 0; i < 2; i++) {
            clock.advance(SAMPLE_NS);
            runNs += SAMPLE_NS / 5;
            delayNs += SAMPLE_NS / 3;
            other.atIdle(clock.nanoTime());
        }
        assertTrue(other.shortened());
        readable = false;
        clock.advance(SAMPLE_NS);
        other.atIdle(clock.nanoTime());
        assertEquals(List.of(100_000L, 0L), changes);
        int readsBefore = reads;
        clock.advance(SAMPLE_NS);
        other.atIdle(clock.nanoTime());
        assertEquals(readsBefore, reads, "not read again");
    }

    @Test
    @DisplayName("the sliced idle strategy asks the governor at the start of each wait and every 64 busy rounds, never per idle round")
    void slicedStrategyAsksAtWaitsAndBusyRounds() {
        int[] delegated = new int[1];
        IdleStrategy inner = new IdleStrategy() {
            @Override
            public void idle(int workCount) {
                delegated[0]++;
            }

            @Override
            public void idle() {
                delegated[0]++;
            }

            @Override
            public void reset() {
            }
        };
        SlicedIdleStrategy sliced = new SlicedIdleStrategy(inner, governor, clock);
        sliced.idle(0); // a wait starts: primes (one read)
        for (int i = 0; i < 100; i++) {
            clock.advance(SAMPLE_NS);
            sliced.idle(0); // the same wait goes on: no look
        }
        assertEquals(1, reads);
        sliced.idle(1);
        sliced.idle(0); // a new wait
        assertEquals(2, reads);
        for (int i = 0; i < SlicedIdleStrategy.BUSY_ROUNDS - 1; i++) {
            clock.advance(SAMPLE_NS);
            sliced.idle(3);
        }
        assertEquals(2, reads, "busy rounds: no look before the 64th");
        clock.advance(SAMPLE_NS);
        sliced.idle(3);
        assertEquals(3, reads);
        assertEquals(1 + 100 + 2 + SlicedIdleStrategy.BUSY_ROUNDS, delegated[0], "every call reaches the wrapped strategy");
    }
}
