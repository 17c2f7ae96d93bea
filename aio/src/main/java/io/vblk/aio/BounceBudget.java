package io.vblk.aio;

import java.util.concurrent.atomic.AtomicLong;

/**
 * The bounce memory a device may borrow at once, shared by all of its back ends (one per I/O
 * thread; they all share the device's {@link Image}, which holds the budget).
 *
 * <h2>Policy (issue 10)</h2>
 * A guest whose buffers miss O_DIRECT's memory alignment makes every read and write go through an
 * aligned bounce buffer. Before this budget each slot kept a buffer as large as its largest
 * operation (up to 4 MiB) forever: depth x 4 MiB pinned per I/O thread. Now:
 * <ul>
 *   <li>Each slot keeps at most {@link SlotTable#RETAINED_BOUNCE_BYTES} (64 KiB) for small
 *       operations, made on first use and reused (nothing per operation): at most
 *       {@code depth x 64 KiB} per back end, not charged here.</li>
 *   <li>An operation that needs more borrows exactly its page-rounded size from this budget, and
 *       gives it back (unmapped) when it completes: idle, a device holds no borrowed memory.</li>
 *   <li>When the budget cannot cover an operation, the operation waits, in arrival order, in its
 *       back end (accepted, its slot held, reported by {@code pendingSubmit()}) and is staged at
 *       a later {@code submit()} once completions gave memory back. It never fails for lack of
 *       budget and nothing allocates past it. The budget is at least one largest operation
 *       ({@link BackendOptions#DEFAULT_MAX_BOUNCE_BYTES}), so one operation always fits once
 *       others complete.</li>
 * </ul>
 * Trade-off: while an operation waits, its back end reports it in {@code pendingSubmit()}, so the
 * engine's I/O thread does not sleep and retries at every round (it spins until completions,
 * on this or another of the device's threads, give memory back). The alternative, a wake-up
 * from the completing thread, would put a cross-thread signal on every borrowed completion;
 * waiting only happens when a guest keeps more large unaligned transfers in flight than the
 * budget holds.
 * Thread-safe (a CAS per borrowed operation; none for retained buffers).
 */
public final class BounceBudget {
    /** The default budget per device: 64 MiB (16 operations of 4 MiB at once). */
    public static final long DEFAULT_BYTES = 64L << 20;

    private final long limitBytes;
    private final AtomicLong inUse = new AtomicLong();
    private final AtomicLong peak = new AtomicLong();

    /**
     * A budget of {@code limitBytes}.
     *
     * @throws IllegalArgumentException below {@link BackendOptions#DEFAULT_MAX_BOUNCE_BYTES}
     */
    public BounceBudget(long limitBytes) {
        if (limitBytes < BackendOptions.DEFAULT_MAX_BOUNCE_BYTES) {
            throw new IllegalArgumentException("bounce budget " + limitBytes + " bytes is below one largest bounced operation ("
                    + BackendOptions.DEFAULT_MAX_BOUNCE_BYTES + " bytes)");
        }
        this.limitBytes = limitBytes;
    }

    /** Takes {@code bytes} if the budget has them; false (nothing taken) if not. */
    boolean tryTake(long bytes) {
        long used;
        long next;
        do {
            used = inUse.get();
            next = used + bytes;
            if (next > limitBytes) {
                return false;
            }
        } while (!inUse.compareAndSet(used, next));
        peak.accumulateAndGet(next, Math::max);
        return true;
    }

    /** Gives back {@code bytes} taken earlier. */
    void give(long bytes) {
        inUse.addAndGet(-bytes);
    }

    /** The limit. */
    public long limitBytes() {
        return limitBytes;
    }

    /** Bytes borrowed now. */
    public long inUseBytes() {
        return inUse.get();
    }

    /** The most bytes ever borrowed at once. */
    public long peakBytes() {
        return peak.get();
    }

    @Override
    public String toString() {
        return "BounceBudget[" + inUseBytes() + " of " + limitBytes + " bytes in use, peak " + peakBytes() + "]";
    }
}
