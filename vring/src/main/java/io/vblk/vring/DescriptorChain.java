package io.vblk.vring;

import io.vblk.hostmem.SegmentSink;

/**
 * A reusable view of one popped descriptor chain: its head index and its buffers as host
 * segments, device-readable ones first (virtio 1.2 2.7.4.2). Filled by
 * {@link SplitQueue#pop(DescriptorChain)}; valid until the next pop into the same view.
 * Allocation-free: the arrays are sized once, at construction.
 *
 * <p>A buffer that crosses from one guest region into the adjacent one (or is longer than
 * {@link io.vblk.hostmem.GuestMemory#MAX_SEGMENT_BYTES}) becomes several segments; zero-length
 * descriptors produce none. A chain with more segments than the {@link #capacity()} is still
 * popped whole, with {@link #overflowed()} set: its byte totals are exact, and it keeps its first
 * {@code capacity - 1} segments and its very last one (so a virtio-blk status byte can still be
 * written); the owner completes it with an error.
 */
public final class DescriptorChain {
    private final long[] addresses;
    private final int[] lengths;
    private final boolean[] writable;
    /** Which buffer descriptor (0-based, in chain order) each segment came from. */
    private final int[] descriptors;
    private final int capacity;
    private int head = -1;
    private int segmentCount;
    private int descriptorCount;
    private long readableBytes;
    private long writableBytes;
    private boolean overflowed;
    private boolean indirect;
    private boolean nextWritable;
    /** Receives the segments of one buffer from {@code GuestMemory.translate}. */
    final SegmentSink sink = (hostAddress, length) -> {
        add(hostAddress, length, nextWritable);
        return true;
    };

    /** A view holding up to {@code capacity} segments (at least 1). */
    public DescriptorChain(int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity must be at least 1: " + capacity);
        }
        this.capacity = capacity;
        addresses = new long[capacity];
        lengths = new int[capacity];
        writable = new boolean[capacity];
        descriptors = new int[capacity];
    }

    /** The most segments this view holds. */
    public int capacity() {
        return capacity;
    }

    /** The head descriptor index: the id to give {@link SplitQueue#addUsed}. */
    public int head() {
        return head;
    }

    /** How many segments the view holds. */
    public int segmentCount() {
        return segmentCount;
    }

    /** Host address of segment {@code i}. */
    public long address(int i) {
        return addresses[i];
    }

    /** Length of segment {@code i} in bytes (positive). */
    public int length(int i) {
        return lengths[i];
    }

    /** Whether segment {@code i} is device-writable. */
    public boolean writable(int i) {
        return writable[i];
    }

    /**
     * The buffer descriptor segment {@code i} came from, counted from 0 in chain order as {@link
     * #descriptorCount()} counts them: the segments of a buffer split at a region boundary have
     * the same one (limits such as virtio-blk's SEG_MAX count descriptors, not segments).
     */
    public int descriptor(int i) {
        return descriptors[i];
    }

    /** Total bytes of the device-readable buffers. */
    public long readableBytes() {
        return readableBytes;
    }

    /** Total bytes of the device-writable buffers. */
    public long writableBytes() {
        return writableBytes;
    }

    /**
     * How many buffer descriptors the chain has (zero-length ones included; the descriptor that
     * points to an indirect table excluded).
     */
    public int descriptorCount() {
        return descriptorCount;
    }

    /** Whether the chain went through an indirect table. */
    public boolean indirect() {
        return indirect;
    }

    /** Whether the chain had more segments than {@link #capacity()} (see the class comment). */
    public boolean overflowed() {
        return overflowed;
    }

    void reset(int head) {
        this.head = head;
        segmentCount = 0;
        descriptorCount = 0;
        readableBytes = 0;
        writableBytes = 0;
        overflowed = false;
        indirect = false;
    }

    void markIndirect() {
        indirect = true;
    }

    void countDescriptor() {
        descriptorCount++;
    }

    /** Sets the access of the segments {@link #sink} receives next. */
    void nextWritable(boolean isWritable) {
        nextWritable = isWritable;
    }

    void add(long hostAddress, int length, boolean isWritable) {
        if (isWritable) {
            writableBytes += length;
        } else {
            readableBytes += length;
        }
        int i = segmentCount;
        if (i == capacity) {
            overflowed = true;
            i = capacity - 1; // keep the last segment: it holds the status byte
        } else {
            segmentCount = i + 1;
        }
        addresses[i] = hostAddress;
        lengths[i] = length;
        writable[i] = isWritable;
        descriptors[i] = descriptorCount - 1;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("DescriptorChain[head ").append(head).append(", ")
                .append(descriptorCount).append(" descriptors").append(indirect ? " (indirect)" : "")
                .append(overflowed ? ", OVERFLOWED" : "");
        for (int i = 0; i < segmentCount; i++) {
            sb.append(String.format(", %s 0x%x+%d", writable[i] ? "W" : "R", addresses[i], lengths[i]));
        }
        return sb.append(']').toString();
    }
}
