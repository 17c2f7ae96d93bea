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

    /**
     * Disjoint covered ranges kept per slot: servers send a read's chunks in order (each one
     * merges with the last), so a few are plenty; a read that would need more fails.
     */
    static final int MAX_RANGES = 8;

    final int depth;
    final int maxSegments;

    // Request, written when it is prepared.
    final byte[] op;
    /** The guest request's offset and length (a request above the server's maximum goes in parts). */
    final long[] requestOffset;
    final long[] requestLength;
    /** The part on the wire now: its offset and length, set by the connection when it sends it. */
    final long[] offset;
    final long[] length;
    /** Where the current part starts within the request (the parts before it are done). */
    final long[] partStart;
    final int[] commandFlags;
    final long[] userData;
    final int[] segments;
    final long[] segmentAddress;
    final int[] segmentLength;

    // Progress, owned by the connection.
    final byte[] state;
    final int[] sequence;
    final long[] covered;
    /** The byte ranges of the read's part covered so far: at most {@link #MAX_RANGES} disjoint [from, to) per slot. */
    final long[] coveredFrom;
    final long[] coveredTo;
    final int[] ranges;
    final int[] error;
    final long[] sentAtNs;
    /**
     * A FLUSH's cover: the disk's count of acknowledged writes when it was laid out (it makes
     * those durable, no later ones). See {@link NbdBackend#flushSent}.
     */
    final long[] flushCovers;
    /** Request headers, 32 bytes apart, sent straight from here. */
    final NativeBuffer headers;

    // Result, written by the connection that completes the slot, read by the disk's poll.
    final long[] result;

    NbdSlots(int depth, int maxSegments) {
        this.depth = depth;
        this.maxSegments = maxSegments;
        op = new byte[depth];
        requestOffset = new long[depth];
        requestLength = new long[depth];
        offset = new long[depth];
        length = new long[depth];
        partStart = new long[depth];
        commandFlags = new int[depth];
        userData = new long[depth];
        segments = new int[depth];
        segmentAddress = new long[depth * maxSegments];
        segmentLength = new int[depth * maxSegments];
        state = new byte[depth];
        sequence = new int[depth];
        covered = new long[depth];
        flushCovers = new long[depth];
        coveredFrom = new long[depth * MAX_RANGES];
        coveredTo = new long[depth * MAX_RANGES];
        ranges = new int[depth];
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

    /** Forgets what a read's chunks covered (before the request is sent). */
    void resetCovered(int slot) {
        covered[slot] = 0;
        ranges[slot] = 0;
    }

    /**
     * Records that a chunk covered [{@code from}, {@code from + n}) of the request (checked by
     * the caller to lie within it). False when it overlaps what an earlier chunk covered
     * (proto.md: a server MUST NOT send overlapping chunks; counting bytes alone would let two
     * overlapping chunks pass for a whole read) or when the slot's ranges are all in use.
     */
    boolean cover(int slot, long from, long n) {
        if (n == 0) {
            return true;
        }
        long to = from + n;
        int base = slot * MAX_RANGES;
        int count = ranges[slot];
        int before = -1;
        int after = -1;
        for (int i = 0; i < count; i++) {
            long f = coveredFrom[base + i];
            long t = coveredTo[base + i];
            if (from < t && f < to) {
                return false;
            }
            if (t == from) {
                before = i;
            } else if (f == to) {
                after = i;
            }
        }
        if (before >= 0 && after >= 0) {
            // The chunk fills the gap between two ranges: they become one.
            coveredTo[base + before] = coveredTo[base + after];
            count--;
            coveredFrom[base + after] = coveredFrom[base + count];
            coveredTo[base + after] = coveredTo[base + count];
            ranges[slot] = count;
        } else if (before >= 0) {
            coveredTo[base + before] = to;
        } else if (after >= 0) {
            coveredFrom[base + after] = from;
        } else if (count == MAX_RANGES) {
            return false;
        } else {
            coveredFrom[base + count] = from;
            coveredTo[base + count] = to;
            ranges[slot] = count + 1;
        }
        covered[slot] += n;
        return true;
    }

    /**
     * Copies {@code n} bytes from {@code source} into the slot's buffers starting at byte
     * {@code position} of the current part (checked by the caller to lie within the part), or
     * zero-fills them when {@code source} is 0.
     */
    void scatter(int slot, long position, long source, long n) {
        int base = slot * maxSegments;
        int count = segments[slot];
        long skip = partStart[slot] + position;
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
