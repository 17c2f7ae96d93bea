package io.vblk.engine;

import io.vblk.aio.CompletionSink;
import io.vblk.block.BlockDriver;

/**
 * Write-through when the driver did not negotiate VIRTIO_BLK_F_FLUSH (virtio 1.2 5.2.5: without
 * FLUSH, and without CONFIG_WCE, the device is write-through; Linux relies on it): a WRITE or
 * WRITE_ZEROES completes to the guest only once durable. Sits between the block driver's
 * {@link BlockDriver#poll} and the completion route, on the I/O thread: a changing request whose
 * operations have all finished is held, and one {@link BlockDriver#flush} (the FLUSH request's
 * path: fdatasync on io_uring, linux-aio and threads, the drivers' own flush for qcow2 and the
 * network ones) is issued for every request held so far, after they finished; when it completes
 * they go to the route, failed if it failed. Requests finishing meanwhile wait for the next
 * flush. One flush per reaped batch, not per request; nothing allocated per request.
 *
 * <p>Invariant the drains rely on (FaultRecovery counts a request lost only when the back end is
 * idle): after {@link #afterPoll()}, a held request has a flush in flight or prepared (or the
 * back end is full and has operations in flight).
 */
final class WriteThrough implements CompletionSink {
    /** The flush's tag: no request slot has it. */
    static final long SYNC_TAG = 1L << 40;

    private final DeviceModel model;
    private final BlockDriver backend;
    private final RequestPool pool;
    private final CompletionSink route;
    /** Requests finished and not yet covered by a flush. */
    private int[] waiting;
    private int waitingCount;
    /** Requests the flush in flight covers. */
    private int[] covered;
    private int coveredCount;
    private boolean syncInFlight;
    /** The last flush's result for the covered requests (0, or its error). */
    private long coveredResult;
    /** Covered requests already handed to the route (the rest wait after a fault out of it). */
    private int coveredDone;
    private long syncs;

    WriteThrough(DeviceModel model, BlockDriver backend, RequestPool pool, CompletionSink route) {
        this.model = model;
        this.backend = backend;
        this.pool = pool;
        this.route = route;
        this.waiting = new int[pool.size()];
        this.covered = new int[pool.size()];
    }

    /** Whether writes must be durable before they complete: FLUSH not negotiated, a writable disk. */
    private boolean active() {
        return !model.negotiated(BlkFeatures.FLUSH) && !model.readOnly() && !backend.readOnly();
    }

    @Override
    public void complete(long tag, long result) {
        if (tag == SYNC_TAG) {
            synced(result);
            return;
        }
        BlkRequest r = pool.get((int) tag);
        boolean change = r.type == BlkRequestDescriptor.T_OUT || r.type == BlkRequestDescriptor.T_WRITE_ZEROES;
        if (!change || r.stage != BlkRequest.HANDED || (r.heldOps == 0 && !active())) {
            route.complete(tag, result);
            return;
        }
        // Hold every operation's result until the request's last one is in: the route then sees
        // them all, in one go, after the flush.
        if (result < 0) {
            r.heldError = result;
        } else {
            r.heldResult = result;
        }
        if (++r.heldOps < r.pendingOps) {
            return;
        }
        if (r.heldError < 0) {
            release(r, 0); // failed: nothing to make durable
        } else {
            waiting[waitingCount++] = r.slot;
        }
    }

    /**
     * After every poll of the block driver: prepares one flush for the requests held since the
     * last one, unless a flush is in flight (they wait for the next). The caller's submit sends
     * it. Returns whether it prepared one.
     */
    boolean afterPoll() {
        if (!syncInFlight && coveredCount > 0) {
            releaseCovered(); // left by a fault out of the route in the last release
        }
        if (syncInFlight || waitingCount == 0) {
            return false;
        }
        int rc = backend.flush(SYNC_TAG);
        if (rc == -io.vblk.sys.Errno.EAGAIN) {
            return false; // the back end is full: its completions bring the next poll
        }
        int[] t = covered;
        covered = waiting;
        coveredCount = waitingCount;
        waiting = t;
        waitingCount = 0;
        if (rc != 0) {
            synced(rc); // refused (closed, read-only now): the writes cannot be made durable
            return false;
        }
        syncInFlight = true;
        syncs++;
        return true;
    }

    /** Whether requests are held (finished, not yet durable). */
    boolean holding() {
        return waitingCount > 0 || coveredCount > coveredDone;
    }

    /** Flushes issued for write-through (for tests and diagnostics). */
    long syncs() {
        return syncs;
    }

    private void synced(long result) {
        syncInFlight = false;
        coveredResult = result < 0 ? result : 0;
        releaseCovered();
    }

    /**
     * Hands every covered request to the route, one operation at a time, each counted off before
     * the route sees it: a fault thrown out of the route for one (a late guest-memory fault)
     * loses that one only; the rest stay covered and the next {@link #afterPoll()} goes on with
     * them. A request leaves {@code covered} before its last operation goes to the route, which
     * completes it and frees its slot for reuse.
     */
    private void releaseCovered() {
        while (coveredDone < coveredCount) {
            BlkRequest r = pool.get(covered[coveredDone]);
            long result = outcome(r, coveredResult);
            while (r.heldOps > 1) {
                r.heldOps--;
                route.complete(r.slot, result);
            }
            coveredDone++;
            r.heldOps = 0;
            r.heldError = 0;
            route.complete(r.slot, result);
        }
        coveredCount = 0;
        coveredDone = 0;
    }

    /** Hands {@code r}'s held operations to the route, failed with {@code syncError} if not 0. */
    private void release(BlkRequest r, long syncError) {
        long result = outcome(r, syncError);
        int ops = r.heldOps;
        r.heldOps = 0;
        r.heldError = 0;
        for (int i = 0; i < ops; i++) {
            route.complete(r.slot, result);
        }
    }

    /** The result each of {@code r}'s operations reports: its own error, else the flush's, else its result. */
    private static long outcome(BlkRequest r, long syncError) {
        return r.heldError < 0 ? r.heldError : syncError < 0 ? syncError : r.heldResult;
    }
}
