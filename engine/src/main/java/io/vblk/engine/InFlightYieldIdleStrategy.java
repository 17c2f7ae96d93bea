package io.vblk.engine;

import java.util.function.IntSupplier;

import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;

/**
 * While the back end holds operations (in the kernel, on its workers), an idle round yields the
 * core ({@code sched_yield}) instead of going to the idle strategy it wraps, for at most
 * {@code maxYieldNs} since the last round that did work; after that, or with nothing in flight,
 * the wrapped strategy decides (adaptive polling, a sleep in the kernel).
 *
 * <p>Why: with requests on the disk, the next thing to happen is soon (a completion, or the
 * guest's refill after the interrupt it just got), and a thread that slept in epoll must be woken
 * for it: one wake-up by the completion eventfd and one by the guest's kick per cycle, each tens
 * to hundreds of microseconds on a loaded host, while the requests wait in the used and avail
 * rings instead of on the disk. Measured on the 2-core machine at depth 128 on a filled file
 * ({@code vblk bench --compare --only fio}): the adaptive I/O thread kept 97 of 128 requests with
 * the device (18 waited in the avail ring, 12 in the used ring) and reached 0.77x fio; one that
 * yields kept the disk full and reached 0.96x, at about 25% more CPU per I/O. Yielding, unlike
 * spinning, hands the core to any other runnable thread (the guest's, a neighbour's) at once.
 * The bound keeps a slow disk (a network export, a 10 ms HDD) from costing a core per I/O.
 *
 * <p>Off by default ({@link Tuning.Builder#inFlightYieldNs}; an embedder opts in): in the
 * quiet-machine A/B runs at the end of that round (embedded, depth 128, same file, main with and
 * without it alternating) it cost about 1 us of CPU per I/O (4.4-5.3 against 3.5-3.9 us) and
 * gave no IOPS the noise could not explain; it does not judge whether it pays, as the adaptive
 * window does.
 *
 * <p>Owned by one thread; allocation-free.
 */
final class InFlightYieldIdleStrategy implements IdleStrategy {
    private final IdleStrategy delegate;
    private final IntSupplier inFlight;
    private final NanoClock clock;
    private final long maxYieldNs;
    private final Runnable yielder;
    /** An idle stretch is under way since {@link #idleSinceNs}. */
    private boolean idling;
    private long idleSinceNs;
    private long yields;

    /**
     * @param inFlight   the back end's operations in flight (read once per idle round)
     * @param maxYieldNs the longest yielding after the last work (0: never yield)
     */
    InFlightYieldIdleStrategy(IdleStrategy delegate, IntSupplier inFlight, NanoClock clock, long maxYieldNs) {
        this(delegate, inFlight, clock, maxYieldNs, Thread::yield);
    }

    /** As above, yielding with {@code yielder} (tests count the yields). */
    InFlightYieldIdleStrategy(IdleStrategy delegate, IntSupplier inFlight, NanoClock clock, long maxYieldNs, Runnable yielder) {
        if (maxYieldNs < 0) {
            throw new IllegalArgumentException("maxYieldNs must not be negative: " + maxYieldNs);
        }
        this.delegate = delegate;
        this.inFlight = inFlight;
        this.clock = clock;
        this.maxYieldNs = maxYieldNs;
        this.yielder = yielder;
    }

    @Override
    public void idle(int workCount) {
        if (workCount > 0) {
            idling = false;
            delegate.idle(workCount);
            return;
        }
        idle();
    }

    @Override
    public void idle() {
        if (maxYieldNs > 0 && inFlight.getAsInt() > 0) {
            long now = clock.nanoTime();
            if (!idling) {
                idling = true;
                idleSinceNs = now;
            }
            if (now - idleSinceNs < maxYieldNs) {
                yields++;
                yielder.run();
                return;
            }
        }
        delegate.idle();
    }

    @Override
    public void reset() {
        idling = false;
        delegate.reset();
    }

    /** Idle rounds that yielded instead of going to the wrapped strategy. */
    long yields() {
        return yields;
    }

    /** The wrapped strategy. */
    IdleStrategy delegate() {
        return delegate;
    }

    @Override
    public String alias() {
        return "in-flight-yield+" + delegate.alias();
    }
}
