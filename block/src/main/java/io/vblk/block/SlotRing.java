package io.vblk.block;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

import org.agrona.BitUtil;

/**
 * A bounded single-producer single-consumer queue of slot indices, allocation-free, for
 * drivers whose operations finish on another thread (the network drivers). The producer
 * publishes an element with a volatile store of {@code tail}; the consumer acquires it, so every
 * slot field written before the offer is visible to the thread that polls it. The two counters
 * sit 128 bytes apart so the two threads do not share a cache line.
 */
public final class SlotRing {
    private static final VarHandle COUNTERS = MethodHandles.arrayElementVarHandle(long[].class);
    private static final int HEAD = 7;
    private static final int TAIL = HEAD + 16;

    private final int[] elements;
    private final int mask;
    private final long[] counters = new long[TAIL + 8];

    /** A ring of at least {@code capacity} elements. */
    public SlotRing(int capacity) {
        int size = BitUtil.findNextPositivePowerOfTwo(Math.max(1, capacity));
        elements = new int[size];
        mask = size - 1;
    }

    /** Producer: appends; false when full. */
    public boolean offer(int value) {
        long tail = (long) COUNTERS.getOpaque(counters, TAIL);
        long head = (long) COUNTERS.getAcquire(counters, HEAD);
        if (tail - head == elements.length) {
            return false;
        }
        elements[(int) tail & mask] = value;
        // Volatile: a "consumer sleeping" flag read after this store must see the consumer's
        // own volatile store (Dekker-style hand-off with the sleeping flag).
        COUNTERS.setVolatile(counters, TAIL, tail + 1);
        return true;
    }

    /** Consumer: the oldest element, or -1 when empty. */
    public int poll() {
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
    public int size() {
        long head = (long) COUNTERS.getAcquire(counters, HEAD);
        long tail = (long) COUNTERS.getVolatile(counters, TAIL);
        return (int) (tail - head);
    }
}
