package io.vblk.aio;

import java.nio.Buffer;
import java.nio.ByteBuffer;

import org.agrona.BufferUtil;
import org.agrona.UnsafeApi;

/**
 * A direct {@link ByteBuffer} that is pointed at arbitrary native memory (a guest buffer) and
 * re-pointed for every segment, so that {@link java.nio.channels.FileChannel} can read into and
 * write from guest memory without a copy and without allocating a buffer per operation.
 *
 * <p>Java has no public way to wrap an address in a ByteBuffer before the foreign memory API;
 * this rewrites the {@code address} and {@code capacity} fields of one buffer it owns, as Agrona
 * and Netty do. The buffer is confined to its owning thread. The memory it points at must stay
 * valid while a channel call uses it (the caller owns guest memory for the operation's life).
 */
final class NativeWindow {
    private static final long CAPACITY_OFFSET = UnsafeApi.objectFieldOffset(Buffer.class, "capacity");

    private final ByteBuffer buffer = ByteBuffer.allocateDirect(1);

    /** Points the window at {@code length} bytes at {@code address}, position 0, limit {@code length}. */
    ByteBuffer wrap(long address, int length) {
        UnsafeApi.putLong(buffer, BufferUtil.BYTE_BUFFER_ADDRESS_FIELD_OFFSET, address);
        UnsafeApi.putInt(buffer, CAPACITY_OFFSET, length);
        buffer.clear();
        return buffer;
    }
}
