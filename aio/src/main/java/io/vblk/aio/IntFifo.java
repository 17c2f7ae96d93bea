package io.vblk.aio;

import org.agrona.BitUtil;

/**
 * A bounded FIFO of ints owned by one thread, allocation-free: the submitter's lists of slots
 * waiting for their next step (bounce memory, a bounce copy, the helper thread, a local
 * completion).
 *
 * <p>Head and tail only ever grow, each by one store, and {@link #take()} removes an element
 * before its caller acts on it. So an exception thrown anywhere (the JVM raises a guest-memory
 * fault asynchronously, at a safepoint poll the code does not choose: see engine GuestFaults)
 * can drop the element being handled, never hand it on twice.
 */
final class IntFifo {
    private final int[] elements;
    private final int mask;
    private int head;
    private int tail;

    IntFifo(int capacity) {
        int size = BitUtil.findNextPositivePowerOfTwo(Math.max(1, capacity));
        elements = new int[size];
        mask = size - 1;
    }

    /** Appends {@code value}; the caller never holds more than the capacity (one per slot). */
    void add(int value) {
        elements[tail & mask] = value;
        tail++;
    }

    /** The oldest element (not removed); only when not empty. */
    int peek() {
        return elements[head & mask];
    }

    /** The element {@code i} places after the oldest; only when {@code i < size()}. */
    int get(int i) {
        return elements[(head + i) & mask];
    }

    /** Removes and returns the oldest element; only when not empty. */
    int take() {
        int value = elements[head & mask];
        head++;
        return value;
    }

    int size() {
        return tail - head;
    }

    boolean isEmpty() {
        return tail == head;
    }

    /** Forgets every element (one store). */
    void clear() {
        head = tail;
    }
}
