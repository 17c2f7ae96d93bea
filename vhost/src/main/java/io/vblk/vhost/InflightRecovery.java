package io.vblk.vhost;

import java.lang.invoke.VarHandle;
import java.util.Arrays;

/**
 * The reconnect half of inflight tracking (vhost-user.rst, "Inflight I/O tracking", split
 * virtqueue, "When reconnecting"): from the queue region a previous backend left and the ring's
 * indices in guest memory, works out which requests to resubmit, in the order they were popped,
 * and where the ring resumes.
 *
 * <p>Why the resume index is {@code used.idx + resubmitted}: every available entry a backend
 * consumed is either completed (counted in {@code used.idx}) or still in flight (flagged in the
 * region), so that sum is the number consumed. The frontend's SET_VRING_BASE cannot know it: QEMU
 * rewinds to {@code used.idx} when its backend dies, which after out-of-order completions would
 * repeat requests the guest already has back and lose older ones still in flight.
 *
 * <p>The region is frontend-writable memory, so it is read as hostile: each field is read once,
 * every index taken from it is checked against the ring before it indexes anything, the walk
 * of the last batch's list is bounded by the batch size and refuses a loop, and a region that
 * fails any check is refused whole, before anything in it is changed.
 */
final class InflightRecovery {
    /**
     * How a queue resumes.
     *
     * @param initialised the region was uninitialised (no previous backend used it) and now is
     * @param heads the chains to resubmit, in the order the previous backend popped them
     * @param lastBatchCleared entries of the last batch found published but still flagged
     * @param nextAvail the next available index to process
     * @param nextCounter the counter for the next pop
     * @param lastBatchHead {@code last_batch_head} as found, where the next batch list links on
     */
    record Result(boolean initialised, int[] heads, int lastBatchCleared, int nextAvail, long nextCounter,
            int lastBatchHead) {
    }

    private InflightRecovery() {
    }

    /**
     * Recovers {@code region} for a ring of {@code ringSize} entries whose {@code used.idx} and
     * {@code avail.idx} in guest memory are {@code usedIdx} and {@code availIdx}; {@code base} is
     * the frontend's SET_VRING_BASE, used only when the region is fresh. Fixes up the region
     * (clears the last batch's stale flags, records {@code used_idx}) once every check passed.
     *
     * @throws ProtocolError (rejected) naming the inconsistency when the region cannot be trusted
     */
    static Result recover(InflightRegion region, int ringSize, int usedIdx, int availIdx, int base) {
        int queueSize = region.queueSize();
        if (ringSize > queueSize) {
            throw reject("the ring has " + ringSize + " entries, the region only " + queueSize);
        }
        int version = region.version();
        if (version == InflightDescriptor.VERSION_UNINITIALISED) {
            region.initialise(usedIdx);
            return new Result(true, new int[0], 0, base, 0, 0);
        }
        if (version != InflightDescriptor.VERSION) {
            throw reject("version " + version + ", expected " + InflightDescriptor.VERSION
                    + " (or 0 for a fresh region)");
        }
        int descNum = region.descNum();
        if (descNum != queueSize) {
            throw reject("desc_num " + descNum + ", but the frontend announced a queue size of " + queueSize);
        }
        int lastBatchHead = region.lastBatchHead();
        boolean[] inLastBatch = new boolean[queueSize];
        int lastBatch = lastBatch(region, ringSize, usedIdx, lastBatchHead, inLastBatch);
        int[] heads = flaggedInPopOrder(region, ringSize, inLastBatch);
        int offered = (availIdx - usedIdx) & 0xFFFF;
        if (heads.length > offered) {
            throw reject(heads.length + " requests are marked in flight, but the driver made only " + offered
                    + " available beyond used.idx " + usedIdx + " (avail.idx " + availIdx + ")");
        }
        long nextCounter = 0;
        for (int head : heads) {
            nextCounter = Long.compareUnsigned(region.counter(head) + 1, nextCounter) > 0 ? region.counter(head) + 1
                    : nextCounter;
        }
        // Every check passed: now the region may change.
        for (int head = 0; head < queueSize; head++) {
            if (inLastBatch[head]) {
                region.clearInflight(head);
            }
        }
        // The flags first, as on the data path: used_idx says they are cleared.
        VarHandle.releaseFence();
        region.setUsedIdx(usedIdx);
        return new Result(false, heads, lastBatch, (usedIdx + heads.length) & 0xFFFF, nextCounter, lastBatchHead);
    }

    /**
     * When {@code used.idx} moved past the region's {@code used_idx}, the backend died after
     * publishing a batch and before recording it: marks that batch's heads in {@code inLastBatch}
     * by walking the list from {@code last_batch_head}. Returns the batch size.
     */
    private static int lastBatch(InflightRegion region, int ringSize, int usedIdx, int lastBatchHead,
            boolean[] inLastBatch) {
        int recordedUsedIdx = region.usedIdx();
        int batch = (usedIdx - recordedUsedIdx) & 0xFFFF;
        // No batch is larger than what can be in flight at once: the ring size.
        if (batch > ringSize) {
            throw reject("used.idx " + usedIdx + " is " + batch + " past the region's used_idx " + recordedUsedIdx
                    + ", more than the ring's " + ringSize + " entries");
        }
        int head = lastBatchHead;
        for (int i = 0; i < batch; i++) {
            if (head >= ringSize) {
                throw reject("entry " + i + " of the last batch's list is head " + head + ", outside the ring of "
                        + ringSize);
            }
            if (inLastBatch[head]) {
                throw reject("the last batch's list loops back to head " + head + " after " + i + " entries");
            }
            inLastBatch[head] = true;
            if (i + 1 < batch) {
                head = region.next(head);
            }
        }
        return batch;
    }

    /** The heads flagged in flight (outside the last batch), ordered by counter, then head. */
    private static int[] flaggedInPopOrder(InflightRegion region, int ringSize, boolean[] inLastBatch) {
        int queueSize = region.queueSize();
        int count = 0;
        int[] flagged = new int[queueSize];
        long[] counters = new long[queueSize];
        for (int head = 0; head < queueSize; head++) {
            int inflight = region.inflight(head);
            if (inflight == 0 || inLastBatch[head]) {
                continue;
            }
            if (inflight != 1) {
                throw reject("desc[" + head + "].inflight is " + inflight + ", expected 0 or 1");
            }
            if (head >= ringSize) {
                throw reject("head " + head + " is marked in flight, outside the ring of " + ringSize);
            }
            flagged[count] = head;
            counters[head] = region.counter(head);
            count++;
        }
        Integer[] order = new Integer[count];
        for (int i = 0; i < count; i++) {
            order[i] = flagged[i];
        }
        // Unsigned: the counter is a u64. Ties (only a frontend can make them) go by head.
        Arrays.sort(order, (a, b) -> {
            int c = Long.compareUnsigned(counters[a], counters[b]);
            return c != 0 ? c : Integer.compare(a, b);
        });
        int[] heads = new int[count];
        for (int i = 0; i < count; i++) {
            heads[i] = order[i];
        }
        return heads;
    }

    private static ProtocolError reject(String reason) {
        return ProtocolError.rejected("inflight region refused: " + reason);
    }
}
