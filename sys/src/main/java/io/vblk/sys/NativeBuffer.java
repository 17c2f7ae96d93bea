package io.vblk.sys;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import org.agrona.BitUtil;
import org.agrona.BufferUtil;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * Off-heap scratch memory for arguments of native calls (iovecs, msghdrs, epoll events), aligned
 * and freed by the garbage collector with its owner. Allocated once, then reused: the hot path
 * never allocates one.
 */
public final class NativeBuffer {
    private final ByteBuffer owner;
    private final UnsafeBuffer buffer;

    /** Allocates {@code sizeBytes} of zeroed memory aligned to {@code alignment} (a power of 2). */
    public NativeBuffer(int sizeBytes, int alignment) {
        if (sizeBytes <= 0) {
            throw new IllegalArgumentException("sizeBytes must be positive: " + sizeBytes);
        }
        owner = BufferUtil.allocateDirectAligned(BitUtil.align(sizeBytes, alignment), alignment)
                .order(ByteOrder.LITTLE_ENDIAN);
        buffer = new UnsafeBuffer(owner);
    }

    /** Allocates {@code sizeBytes} aligned to 64 bytes (a cache line). */
    public NativeBuffer(int sizeBytes) {
        this(sizeBytes, 64);
    }

    /** The memory as a buffer; its {@code addressOffset()} is the native address. */
    public UnsafeBuffer buffer() {
        return buffer;
    }

    /** The native address of the first byte. */
    public long address() {
        return buffer.addressOffset();
    }

    /** The usable size in bytes. */
    public int capacity() {
        return buffer.capacity();
    }

    /** Keeps the owning buffer reachable as long as this object is. */
    ByteBuffer owner() {
        return owner;
    }
}
