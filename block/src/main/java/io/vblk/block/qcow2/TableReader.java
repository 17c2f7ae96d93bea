package io.vblk.block.qcow2;

import java.io.IOException;
import java.nio.ByteOrder;

import org.agrona.UnsafeApi;

import io.vblk.sys.NativeBuffer;

/**
 * Reads big-endian fields of tables an open scans once and does not keep (a read-only image's
 * refcount table, the snapshot table, the snapshots' L1 tables) through one small buffer that
 * moves along with the reads: memory bounded by {@link #WINDOW_BYTES}, never by a header field,
 * and one host read per window, not per field (a network disk pays a round trip each).
 */
final class TableReader {
    /** The window: 8192 refcount or L1 entries, hundreds to thousands of snapshot table entries. */
    static final int WINDOW_BYTES = 64 << 10;

    private final Qcow2Host host;
    private final NativeBuffer window;
    private final int alignment;
    private long start = -1;

    /** A reader of {@code host}, whose reads must start and end at multiples of {@code alignment} (a power of two). */
    TableReader(Qcow2Host host, int alignment) {
        this.host = host;
        this.alignment = Math.max(alignment, 8);
        this.window = new NativeBuffer((int) Qcow2Image.roundUp(Math.max(WINDOW_BYTES, 2L * this.alignment), this.alignment),
                this.alignment);
    }

    long getLong(long position) throws IOException {
        return window.buffer().getLong(at(position, 8), ByteOrder.BIG_ENDIAN);
    }

    int getInt(long position) throws IOException {
        return window.buffer().getInt(at(position, 4), ByteOrder.BIG_ENDIAN);
    }

    /** An unsigned 16-bit field. */
    int getShort(long position) throws IOException {
        return window.buffer().getShort(at(position, 2), ByteOrder.BIG_ENDIAN) & 0xffff;
    }

    /** Where in the window {@code n} bytes at {@code position} lie, moving the window there if they are not in it. */
    private int at(long position, int n) throws IOException {
        if (start < 0 || position < start || position + n > start + window.capacity()) {
            start = position & -(long) alignment;
            // Bytes past the end of the host read as zeros, not as the last window's.
            UnsafeApi.setMemory(window.address(), window.capacity(), (byte) 0);
            host.read(start, window, window.capacity());
        }
        return (int) (position - start);
    }
}
