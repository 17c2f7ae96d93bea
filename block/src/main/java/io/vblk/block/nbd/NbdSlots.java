package io.vblk.block.nbd;

import org.agrona.UnsafeApi;

import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * The preallocated request slots of one NBD disk, as parallel arrays. The disk fills a slot's
 * request fields and hands the index to a connection, which owns the slot (its progress fields)
 * until it hands the index back with the result; all of it on the disk's I/O thread. Nothing here
 * allocates after construction.
 */
final class NbdSlots {
    /** An operation completed without the server (a flush the server does not need, a zero-length transfer). */
    static final byte OP_LOCAL = -1;

    // A connection's states of a slot.
    static final byte IDLE = 0;
    static final byte QUEUED = 1;
    static final byte SENT = 2;

    final int depth;
    final int maxSegments;

    // Request, written when it is prepared.
    final byte[] op;
    final long[] offset;
    final long[] length;
    final int[] commandFlags;
    final long[] userData;
    final int[] segments;
    final long[] segmentAddress;
    final int[] segmentLength;

    // Progress, owned by the connection.
    final byte[] state;
    final int[] sequence;
    final long[] covered;
    final int[] error;
    final long[] sentAtNs;
    /** Request headers, 32 bytes apart, sent straight from here. */
    final NativeBuffer headers;

    // Result, written by the connection that completes the slot, read by the disk's poll.
    final long[] result;

    NbdSlots(int depth, int maxSegments) {
        this.depth = depth;
        this.maxSegments = maxSegments;
        op = new byte[depth];
        offset = new long[depth];
        length = new long[depth];
        commandFlags = new int[depth];
        userData = new long[depth];
        segments = new int[depth];
        segmentAddress = new long[depth * maxSegments];
        segmentLength = new int[depth * maxSegments];
        state = new byte[depth];
        sequence = new int[depth];
        covered = new long[depth];
        error = new int[depth];
        sentAtNs = new long[depth];
        headers = new NativeBuffer(depth * 32);
        result = new long[depth];
    }

    /** Copies the caller's buffers into the slot (the caller may reuse its vector at once). */
    void copySegments(int slot, IoVector buffers) {
        int n = buffers.count();
        int base = slot * maxSegments;
        for (int i = 0; i < n; i++) {
            segmentAddress[base + i] = buffers.address(i);
            segmentLength[base + i] = buffers.length(i);
        }
        segments[slot] = n;
    }

    /**
     * Copies {@code n} bytes from {@code source} into the slot's buffers starting at byte
     * {@code position} of the request (checked by the caller to lie within the request), or
     * zero-fills them when {@code source} is 0.
     */
    void scatter(int slot, long position, long source, long n) {
        int base = slot * maxSegments;
        int count = segments[slot];
        long skip = position;
        long left = n;
        long from = source;
        for (int i = 0; i < count && left > 0; i++) {
            int segLength = segmentLength[base + i];
            if (skip >= segLength) {
                skip -= segLength;
                continue;
            }
            long take = Math.min(segLength - skip, left);
            long to = segmentAddress[base + i] + skip;
            if (from == 0) {
                UnsafeApi.setMemory(to, take, (byte) 0);
            } else {
                UnsafeApi.copyMemory(from, to, take);
                from += take;
            }
            left -= take;
            skip = 0;
        }
    }
}
