package io.vblk.engine;

import io.vblk.aio.IoVector;

/**
 * One in-flight request: a preallocated slot whose index is the back end's user data. It moves
 * parsed -> submitted -> completed -> free, and is reused; nothing here is allocated per request.
 */
final class BlkRequest {
    /** In the pool. */
    static final byte FREE = 0;
    /** Claimed by the I/O thread and not yet handed on: reclaimed after an exception. */
    static final byte CLAIMED = 1;
    /** Owned by the back end or the completion path. */
    static final byte HANDED = 2;
    /**
     * Given up by a quarantined queue's drain while the back end may still hold it (see
     * {@link FaultRecovery#settleLost}): pinned, out of its queue's in-flight count; a late completion
     * only gives the slot back, never touches guest memory.
     */
    static final byte LOST = 3;

    /** Slot index, the user data handed to the back end. */
    final int slot;
    /** The guest data buffers, as host addresses. */
    final IoVector data;

    DeviceQueue queue;
    int head;
    int type;
    long sector;
    /** Host address of the status byte, or -1 when the chain had no writable byte for it. */
    long statusAddress;
    /** Bytes the device writes into the chain on success (data read + the status byte). */
    int usedLength;
    /** Data bytes moved (for counters and throttling). */
    long bytes;
    long startNs;
    /** Back-end operations still outstanding for this request. */
    int pendingOps;
    /** Worst result of the request's operations: 0 or -errno. */
    long error;
    /** Status to write when the request completes without reaching the back end. */
    byte immediateStatus;
    /** Where the request is (FREE, CLAIMED, HANDED, LOST); I/O thread only. */
    byte stage;
    /** Set when its completion gives it back (so a failure handler does not give it back twice). */
    boolean finished;
    /**
     * Its back end's prepare threw (a direct-memory shortage): whether the back end took it is
     * unknown, so it waits {@link #HANDED} for either its completion or a back end with nothing
     * in flight, which proves none will come ({@link FaultRecovery#settleUnanswered}); its
     * thread pops nothing meanwhile, so that comes once the operations held at the throw are back
     * ({@link RequestDispatcher#canPop}). I/O thread only.
     */
    boolean unanswered;
    /** Operations finished and held for a write-through flush ({@link WriteThrough}); I/O thread only. */
    int heldOps;
    /** The last successful result among them. */
    long heldResult;
    /** The first failure among them, or 0. */
    long heldError;

    /**
     * Host segments a request's data may have beyond SEG_MAX's descriptors: a buffer that
     * crosses into an adjacent guest region (or is longer than a host segment) is split, one
     * more segment per boundary. A request past it fails with IOERR (RequestParser).
     */
    static final int SPLIT_SEGMENTS = io.vblk.vring.SplitQueue.CHAIN_SLACK_SEGMENTS;

    /** The data vector's size for a device offering {@code segMax}: its descriptors and their splits. */
    static int dataCapacity(int segMax) {
        return Math.max(1, Math.min(segMax, Integer.MAX_VALUE - SPLIT_SEGMENTS)) + SPLIT_SEGMENTS;
    }

    BlkRequest(int slot, int maxSegments) {
        this.slot = slot;
        this.data = new IoVector(maxSegments);
    }

    void clear() {
        queue = null;
        head = -1;
        type = -1;
        sector = 0;
        statusAddress = -1;
        usedLength = 0;
        bytes = 0;
        pendingOps = 0;
        error = 0;
        immediateStatus = BlkRequestDescriptor.S_OK;
        finished = false;
        unanswered = false;
        heldOps = 0;
        heldResult = 0;
        heldError = 0;
        data.clear();
    }
}
