package io.vblk.vhost;

import static io.vblk.vhost.InflightDescriptor.COUNTER_OFFSET;
import static io.vblk.vhost.InflightDescriptor.INFLIGHT_OFFSET;
import static io.vblk.vhost.InflightDescriptor.LAST_BATCH_HEAD_OFFSET;
import static io.vblk.vhost.InflightDescriptor.NEXT_OFFSET;
import static io.vblk.vhost.InflightDescriptor.USED_IDX_OFFSET;

import java.lang.invoke.VarHandle;

import org.agrona.UnsafeApi;

import io.vblk.engine.InflightTracker;

/**
 * One queue's region of the inflight buffer (see {@link InflightDescriptor}): the tracker the
 * device calls on its data path, and raw accessors for {@link InflightRecovery}.
 *
 * <p>The data path follows vhost-user.rst, "Inflight I/O tracking", split virtqueue, with plain
 * stores only: no allocation, lock, or syscall. A backend killed between any two of its stores
 * leaves a region from which the next one resubmits exactly the requests the guest has not seen
 * completed:
 * <ul>
 *   <li>{@link #popped}: {@code desc[head].counter}, then {@code desc[head].inflight = 1};
 *   <li>{@link #used}: {@code desc[head].next = last_batch_head; last_batch_head = head} (before
 *       the device's release fence and {@code used.idx} store, so the list of the batch is in
 *       memory before the guest can see the batch);
 *   <li>{@link #published}: after {@code used.idx} moved, {@code inflight = 0} for the batch, then
 *       {@code used_idx}. A crash in between leaves {@code used_idx != used.idx}, and the next
 *       backend clears the batch by walking the list from {@code last_batch_head}.
 * </ul>
 *
 * <p>Threads: {@link #popped} runs on the queue's I/O thread and alone writes {@link #counter};
 * {@link #used} and {@link #published} run on the completion side (the same thread in shared
 * mode, the completion thread in dedicated mode) and alone write the batch state, {@code next},
 * {@code last_batch_head} and {@code used_idx}. {@code desc[head].inflight} is set by the one and
 * cleared by the other. The guest sees a head completed (and may post it again) as soon as
 * {@code used.idx} is stored, BEFORE {@link #published} clears the batch's flags: a re-pop in
 * between would have its new flag cleared and be lost by a crash. The device rules that out (in
 * dedicated mode its I/O thread pops nothing of a queue whose completion side is between the
 * {@code used.idx} store and the return of {@link #published}: engine RequestDispatcher
 * .inflightBound); as a second line, {@link #published} leaves the flag of a head popped again
 * since its completion set.
 * {@link #resume} and the accessors are for the control thread while the queue is stopped; the
 * device hands the region to its threads when it starts the queue.
 *
 * <p>The memory is frontend-writable. Nothing here reads it on the data path, and every store
 * is bounded by the queue size the region was mapped for, so whatever the frontend writes there
 * can only affect what a later recovery concludes, which checks it.
 */
final class InflightRegion implements InflightTracker {
    private final long address;
    private final int queueSize;
    /** Heads of the batch being completed, in completion order; completion side. */
    private final int[] batch;
    private int batchCount;
    /** Our copy of {@code last_batch_head}, so the data path never reads frontend memory; completion side. */
    private int lastBatchHead;
    /** The next pop's {@code counter}; I/O thread. */
    private long counter;
    /** Low 32 bits of each head's last pop counter; written by {@link #popped} (I/O thread). */
    private final int[] poppedAs;
    /** {@link #poppedAs} of each {@link #batch} entry when it completed; completion side. */
    private final int[] batchPoppedAs;

    /**
     * A region of {@code queueSize} entries at {@code address}, which must stay mapped for
     * {@link InflightDescriptor#regionBytes(int)} bytes while the region is in use.
     */
    InflightRegion(long address, int queueSize) {
        this.address = address;
        this.queueSize = queueSize;
        this.batch = new int[queueSize];
        this.poppedAs = new int[queueSize];
        this.batchPoppedAs = new int[queueSize];
    }

    /** The queue size the region was mapped for: {@code desc[]} has this many entries. */
    int queueSize() {
        return queueSize;
    }

    /**
     * Prepares the data-path state after a recovery: pops continue from {@code nextCounter}, and
     * the batch list continues from {@code lastBatchHead}. Control thread, queue stopped.
     */
    void resume(long nextCounter, int lastBatchHead) {
        this.counter = nextCounter;
        this.lastBatchHead = lastBatchHead & 0xFFFF;
        this.batchCount = 0;
    }

    // ---------------------------------------------------------------- data path

    @Override
    public void popped(int head) {
        // The device pops heads below the ring size, which recovery checked is at most
        // queueSize; the check keeps every store inside the mapping whatever happens.
        if (Integer.compareUnsigned(head, queueSize) >= 0) {
            return;
        }
        long entry = entry(head);
        poppedAs[head] = (int) counter;
        UnsafeApi.putLong(entry + COUNTER_OFFSET, counter++);
        // The request's I/O is submitted after this returns, through a release store of a
        // submission-queue tail or a syscall; neither lets this store move after it.
        UnsafeApi.putByte(entry + INFLIGHT_OFFSET, (byte) 1);
    }

    @Override
    public void used(int head) {
        if (Integer.compareUnsigned(head, queueSize) >= 0) {
            return;
        }
        UnsafeApi.putShort(entry(head) + NEXT_OFFSET, (short) lastBatchHead);
        lastBatchHead = head;
        UnsafeApi.putShort(address + LAST_BATCH_HEAD_OFFSET, (short) head);
        // A guest that made one head available twice could complete more than queueSize at
        // once; the extra flags then stay set, which only means a redundant resubmission.
        if (batchCount < batch.length) {
            batchPoppedAs[batchCount] = poppedAs[head];
            batch[batchCount++] = head;
        }
    }

    @Override
    public void published(int usedIdx) {
        // Pairs with the device's used.idx store just before: the flags must not be cleared
        // before the guest can see the batch, or a crash in between would lose its requests.
        VarHandle.releaseFence();
        for (int i = 0; i < batchCount; i++) {
            int head = batch[i];
            // A head popped again since it completed is a new request in flight: its flag stays.
            if (poppedAs[head] == batchPoppedAs[i]) {
                UnsafeApi.putByte(entry(head) + INFLIGHT_OFFSET, (byte) 0);
            }
        }
        batchCount = 0;
        // used_idx says "the flags of the last batch are cleared": only after they are, or a
        // crash in between would resubmit requests the guest already has back.
        VarHandle.releaseFence();
        UnsafeApi.putShort(address + USED_IDX_OFFSET, (short) usedIdx);
    }

    // ---------------------------------------------------------------- control thread: raw fields

    private long entry(int head) {
        return address + InflightDescriptor.descOffset(head);
    }

    int version() {
        return UnsafeApi.getShort(address + InflightDescriptor.VERSION_OFFSET) & 0xFFFF;
    }

    int descNum() {
        return UnsafeApi.getShort(address + InflightDescriptor.DESC_NUM_OFFSET) & 0xFFFF;
    }

    int lastBatchHead() {
        return UnsafeApi.getShort(address + LAST_BATCH_HEAD_OFFSET) & 0xFFFF;
    }

    int usedIdx() {
        return UnsafeApi.getShort(address + USED_IDX_OFFSET) & 0xFFFF;
    }

    /** {@code desc[head].inflight}, as stored (the frontend may have stored anything). */
    int inflight(int head) {
        return UnsafeApi.getByte(entry(checked(head)) + INFLIGHT_OFFSET) & 0xFF;
    }

    int next(int head) {
        return UnsafeApi.getShort(entry(checked(head)) + NEXT_OFFSET) & 0xFFFF;
    }

    long counter(int head) {
        return UnsafeApi.getLong(entry(checked(head)) + COUNTER_OFFSET);
    }

    void clearInflight(int head) {
        UnsafeApi.putByte(entry(checked(head)) + INFLIGHT_OFFSET, (byte) 0);
    }

    void setUsedIdx(int usedIdx) {
        UnsafeApi.putShort(address + USED_IDX_OFFSET, (short) usedIdx);
    }

    /**
     * Makes the region a fresh version-1 region: no entry in flight, {@code used_idx} at
     * {@code usedIdx}. The version is stored last, so a crash half-way leaves a region that is
     * still uninitialised.
     */
    void initialise(int usedIdx) {
        UnsafeApi.setMemory(address + InflightDescriptor.DESC_OFFSET, (long) InflightDescriptor.DESC_LENGTH * queueSize,
                (byte) 0);
        UnsafeApi.putLong(address + InflightDescriptor.FEATURES_OFFSET, 0);
        UnsafeApi.putShort(address + InflightDescriptor.DESC_NUM_OFFSET, (short) queueSize);
        UnsafeApi.putShort(address + LAST_BATCH_HEAD_OFFSET, (short) 0);
        UnsafeApi.putShort(address + USED_IDX_OFFSET, (short) usedIdx);
        VarHandle.releaseFence();
        UnsafeApi.putShort(address + InflightDescriptor.VERSION_OFFSET, (short) InflightDescriptor.VERSION);
    }

    private int checked(int head) {
        if (head < 0 || head >= queueSize) {
            throw new IndexOutOfBoundsException("head " + head + " outside the region's " + queueSize + " entries");
        }
        return head;
    }

    @Override
    public String toString() {
        return String.format("InflightRegion[0x%x, %d entries]", address, queueSize);
    }
}
