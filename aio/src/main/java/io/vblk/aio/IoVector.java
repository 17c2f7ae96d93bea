package io.vblk.aio;

import io.vblk.sys.Errno;

/**
 * The guest buffers of one operation: host addresses and lengths, in order. The engine keeps one
 * per request slot and refills it for every request; a back end copies what it needs when an
 * operation is prepared, so the vector may be reused as soon as the prepare call returns.
 *
 * <p>Addresses are host virtual addresses of memory the caller owns (guest memory already
 * translated and bounds-checked by hostmem). Nothing here allocates after construction.
 */
public final class IoVector {
    private final long[] addresses;
    private final int[] lengths;
    private int count;
    private long totalLength;

    /** Creates an empty vector that holds up to {@code maxSegments} segments. */
    public IoVector(int maxSegments) {
        if (maxSegments <= 0) {
            throw new IllegalArgumentException("maxSegments must be positive: " + maxSegments);
        }
        addresses = new long[maxSegments];
        lengths = new int[maxSegments];
    }

    /** Empties the vector for reuse. */
    public void clear() {
        count = 0;
        totalLength = 0;
    }

    /**
     * Appends a segment. Returns 0, or {@code -EINVAL} when the vector is full or the length is
     * negative (the vector is then unchanged).
     */
    public int add(long address, int length) {
        if (count == addresses.length || length < 0) {
            return -Errno.EINVAL;
        }
        addresses[count] = address;
        lengths[count] = length;
        count++;
        totalLength += length;
        return 0;
    }

    /** The number of segments. */
    public int count() {
        return count;
    }

    /** The most segments this vector holds. */
    public int capacity() {
        return addresses.length;
    }

    /** The host address of segment {@code i}. */
    public long address(int i) {
        return addresses[checkIndex(i)];
    }

    /** The length in bytes of segment {@code i}. */
    public int length(int i) {
        return lengths[checkIndex(i)];
    }

    /** The sum of all segment lengths in bytes. */
    public long totalLength() {
        return totalLength;
    }

    private int checkIndex(int i) {
        if (i < 0 || i >= count) {
            throw new IndexOutOfBoundsException("segment " + i + " of " + count);
        }
        return i;
    }

    @Override
    public String toString() {
        return "IoVector[" + count + " segments, " + totalLength + " bytes]";
    }
}
