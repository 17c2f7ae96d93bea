package io.vblk.vhost;

/**
 * Layout of the inflight buffer for split virtqueues (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD; QEMU
 * {@code docs/interop/vhost-user.rst}, "Inflight I/O tracking"). The backend lays it out and the
 * frontend only keeps it, so a restarted backend gets back the layout it wrote; QEMU's
 * libvhost-user and DPDK use the same one, each queue region rounded up to 64 bytes.
 * Little-endian.
 *
 * <pre>
 * buffer (num_queues x region)
 *   +------------------+------------------+-----+------------------+
 *   | queue 0 region   | queue 1 region   | ... | queue N-1 region |
 *   +------------------+------------------+-----+------------------+
 *
 * queue region (16 + 16 x desc_num, rounded up to 64)
 *   0              8             10             12                   14            16
 *   +--------------+-------------+--------------+--------------------+-------------+-------------------+
 *   | u64 features | u16 version | u16 desc_num | u16 last_batch_head| u16 used_idx| desc[desc_num] ...|
 *   +--------------+-------------+--------------+--------------------+-------------+-------------------+
 *   features: 0. version: 0 until a backend initialises the region, then 1. desc_num: the queue
 *   size the frontend announced. last_batch_head, desc[].next: the heads of the batch being
 *   published, newest first. used_idx: used.idx once the last batch was fully recorded.
 *
 * desc entry (16), indexed by head descriptor
 *   0             1                6          8                 16
 *   +-------------+----------------+----------+-----------------+
 *   | u8 inflight | u8 padding[5]  | u16 next | u64 counter     |
 *   +-------------+----------------+----------+-----------------+
 *   inflight: 1 from pop to publish. counter: pop order, to resubmit in the order popped.
 * </pre>
 */
final class InflightDescriptor {
    // ---------------------------------------------------------------- queue region header
    static final int FEATURES_OFFSET = 0;
    static final int VERSION_OFFSET = 8;
    static final int DESC_NUM_OFFSET = 10;
    static final int LAST_BATCH_HEAD_OFFSET = 12;
    static final int USED_IDX_OFFSET = 14;
    static final int DESC_OFFSET = 16;

    /** {@code version} of a region no backend has initialised (a fresh buffer is all zeros). */
    static final int VERSION_UNINITIALISED = 0;
    /** The only layout version there is. */
    static final int VERSION = 1;

    // ---------------------------------------------------------------- desc entry
    static final int INFLIGHT_OFFSET = 0;
    static final int NEXT_OFFSET = 6;
    static final int COUNTER_OFFSET = 8;
    static final int DESC_LENGTH = 16;

    /** Queue regions start at multiples of this within the buffer. */
    static final int REGION_ALIGNMENT = 64;

    private InflightDescriptor() {
    }

    /** Bytes one queue region takes for a queue of {@code queueSize} heads, alignment included. */
    static long regionBytes(int queueSize) {
        long bytes = DESC_OFFSET + (long) DESC_LENGTH * queueSize;
        return (bytes + REGION_ALIGNMENT - 1) & -(long) REGION_ALIGNMENT;
    }

    /** Bytes of the whole buffer: {@code numQueues} regions of {@code queueSize} heads. */
    static long bufferBytes(int numQueues, int queueSize) {
        return numQueues * regionBytes(queueSize);
    }

    /** Offset of head {@code head}'s entry within its queue region. */
    static long descOffset(int head) {
        return DESC_OFFSET + (long) DESC_LENGTH * head;
    }
}
