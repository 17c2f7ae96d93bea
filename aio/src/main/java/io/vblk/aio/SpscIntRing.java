package io.vblk.aio;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

import org.agrona.BitUtil;

/**
 * A bounded single-producer single-consumer queue of ints, allocation-free. It carries slot
 * indices between the submitting thread and the reaping thread: free slots one way, finished
 * slots the other.
 *
 * <p>The producer owns {@code tail}, the consumer owns {@code head}; each reads the other's
 * counter with acquire semantics and publishes its own with release, so an element written
 * before a release of {@code tail} is visible to the consumer that acquired it. The two
 * counters sit in one array, 128 bytes apart, so the two threads do not false-share a line.
 */
final class SpscIntRing {
    private static final VarHandle COUNTERS = MethodHandles.arrayElementVarHandle(long[].class);
    private static final int HEAD = 7;
    private static final int TAIL = HEAD + 16;

    private final int[] elements;
    private final int mask;
    private final long[] counters = new long[TAIL + 8];

    /** A ring holding at least {@code capacity} elements. */
    SpscIntRing(int capacity) {
        int size = BitUtil.findNextPositivePowerOfTwo(Math.max(1, capacity));
        elements = new int[size];
        mask = size - 1;
    }

    /** Producer: appends {@code value}; returns false when full. */
    boolean offer(int value) {
        long tail = (long) COUNTERS.getOpaque(counters, TAIL);
        long head = (long) COUNTERS.getAcquire(counters, HEAD);
        if (tail - head == elements.length) {
            return false;
        }
        elements[(int) tail & mask] = value;
        // Volatile rather than release: a signal flag read after this store must not be
        // reordered before it (see SlottedBackend#signalCompletions).
        COUNTERS.setVolatile(counters, TAIL, tail + 1);
        return true;
    }

    /** Consumer: removes the oldest element, or returns -1 when empty (elements are never negative). */
    int poll() {
        long head = (long) COUNTERS.getOpaque(counters, HEAD);
        long tail = (long) COUNTERS.getVolatile(counters, TAIL);
        if (head == tail) {
            return -1;
        }
        int value = elements[(int) head & mask];
        COUNTERS.setRelease(counters, HEAD, head + 1);
        return value;
    }

    /** Elements queued, as seen from either side. */
    int size() {
        long head = (long) COUNTERS.getAcquire(counters, HEAD);
        long tail = (long) COUNTERS.getAcquire(counters, TAIL);
        return (int) (tail - head);
    }

    /** Whether nothing is queued. */
    boolean isEmpty() {
        return size() == 0;
    }
}
