package io.vblk.engine;

import java.nio.ByteBuffer;

import org.agrona.BufferUtil;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * Counters of one queue, readable while the data plane runs. Each counter has exactly one
 * writer thread, so an increment is a plain read plus an ordered store (no locked instruction);
 * readers use volatile loads. The request side (the I/O thread) and the completion side own
 * separate cache lines so that dedicated threads do not false-share.
 *
 * <pre>
 *  line 0 (request side):    REQUESTS, BYTES, BATCHES, SUBMITS, QUARANTINES, THROTTLED, KICKS, LOST
 *  line 1 (completion side): COMPLETIONS, ERRORS, UNSUPPORTED, INTERRUPTS, INTERRUPTS_SUPPRESSED
 *  line 2 (request side):    READS, WRITES, FLUSHES, DISCARDS, WRITE_ZEROES, READ_BYTES, WRITE_BYTES
 * </pre>
 *
 * <p>{@link #BYTES} is the sum of three slots: each popped request adds its bytes to exactly one
 * of {@link #READ_BYTES}, {@link #WRITE_BYTES} or the slot of the other types (their ranges'
 * lengths), so splitting by direction costs no store beyond the one total it replaces.
 */
public final class QueueCounters {
    /** Requests popped from the ring. */
    public static final int REQUESTS = 0;
    /**
     * Data bytes of popped requests of every type (reads, writes, and the lengths of the ranges
     * of DISCARD and WRITE_ZEROES requests): read as the sum of {@link #READ_BYTES},
     * {@link #WRITE_BYTES} and the bytes of the other types, which this slot holds.
     */
    public static final int BYTES = 1;
    /** Pop batches that found at least one request. */
    public static final int BATCHES = 2;
    /** Submit calls to the back end that carried this queue's requests. */
    public static final int SUBMITS = 3;
    /** Times the queue was quarantined for a corrupt ring. */
    public static final int QUARANTINES = 4;
    /** Pop passes held back by the throttle. */
    public static final int THROTTLED = 5;
    /** Kicks received (method calls and eventfd wake-ups). */
    public static final int KICKS = 6;
    /**
     * Requests a quarantined queue's drain gave up on: a guest-memory fault the JVM delivered
     * inside the back end's reap or submit lost their completion (see {@code GuestFaults}).
     * Never completed into guest memory; the queue stays quarantined until a reset.
     */
    public static final int LOST = 7;
    /** Requests completed and pushed to the used ring. */
    public static final int COMPLETIONS = 8;
    /** Requests completed with IOERR (or without a status byte). */
    public static final int ERRORS = 9;
    /** Requests completed with UNSUPP. */
    public static final int UNSUPPORTED = 10;
    /** Interrupts signalled. */
    public static final int INTERRUPTS = 11;
    /** used.idx publishes that the driver asked not to be interrupted for. */
    public static final int INTERRUPTS_SUPPRESSED = 12;

    /** Read requests (VIRTIO_BLK_T_IN) popped. */
    public static final int READS = 16;
    /** Write requests (VIRTIO_BLK_T_OUT) popped. */
    public static final int WRITES = 17;
    /** Flush requests popped. */
    public static final int FLUSHES = 18;
    /** Discard requests popped. */
    public static final int DISCARDS = 19;
    /** Write-zeroes requests popped. */
    public static final int WRITE_ZEROES = 20;
    /**
     * Data bytes of read requests popped (guest memory written from the disk). On the request
     * side's line, not in the free slots 13-15 of the completion side's: the I/O thread counts it.
     */
    public static final int READ_BYTES = 21;
    /** Data bytes of write requests popped (guest memory written to the disk). */
    public static final int WRITE_BYTES = 22;

    private static final int SLOTS = 24;
    private static final String[] NAMES = new String[SLOTS];

    static {
        NAMES[REQUESTS] = "requests";
        NAMES[BYTES] = "bytes";
        NAMES[BATCHES] = "batches";
        NAMES[SUBMITS] = "submits";
        NAMES[QUARANTINES] = "quarantines";
        NAMES[THROTTLED] = "throttled";
        NAMES[KICKS] = "kicks";
        NAMES[LOST] = "lost";
        NAMES[COMPLETIONS] = "completions";
        NAMES[ERRORS] = "errors";
        NAMES[UNSUPPORTED] = "unsupported";
        NAMES[INTERRUPTS] = "interrupts";
        NAMES[INTERRUPTS_SUPPRESSED] = "interrupts_suppressed";
        NAMES[READS] = "reads";
        NAMES[WRITES] = "writes";
        NAMES[FLUSHES] = "flushes";
        NAMES[DISCARDS] = "discards";
        NAMES[WRITE_ZEROES] = "write_zeroes";
        NAMES[READ_BYTES] = "read_bytes";
        NAMES[WRITE_BYTES] = "write_bytes";
    }

    /** The counter of requests of virtio-blk request type {@code type}, or -1 for other types. */
    static int ofType(int type) {
        switch (type) {
            case BlkRequestDescriptor.T_IN: return READS;
            case BlkRequestDescriptor.T_OUT: return WRITES;
            case BlkRequestDescriptor.T_FLUSH: return FLUSHES;
            case BlkRequestDescriptor.T_DISCARD: return DISCARDS;
            case BlkRequestDescriptor.T_WRITE_ZEROES: return WRITE_ZEROES;
            default: return -1;
        }
    }

    private final ByteBuffer owner = BufferUtil.allocateDirectAligned(SLOTS * Long.BYTES, 64);
    private final UnsafeBuffer values = new UnsafeBuffer(owner);

    /** Adds {@code delta} to {@code counter}; only the counter's owning thread may call this. */
    void add(int counter, long delta) {
        int offset = counter * Long.BYTES;
        values.putLongOrdered(offset, values.getLong(offset) + delta);
    }

    void increment(int counter) {
        add(counter, 1);
    }

    /**
     * Counts a popped request of virtio-blk type {@code type} with {@code bytes} data bytes: one
     * request of its type (none for an unknown type) and its bytes in its direction's counter,
     * or with the other types' bytes in {@link #BYTES}. Request side only.
     */
    void popped(int type, long bytes) {
        switch (type) {
            case BlkRequestDescriptor.T_IN:
                increment(READS);
                add(READ_BYTES, bytes);
                return;
            case BlkRequestDescriptor.T_OUT:
                increment(WRITES);
                add(WRITE_BYTES, bytes);
                return;
            default:
                int byType = ofType(type);
                if (byType >= 0) {
                    increment(byType);
                }
                add(BYTES, bytes);
        }
    }

    /** The current value of {@code counter} (one of this class's constants). */
    public long get(int counter) {
        if (counter == BYTES) {
            // Each part is read once with a volatile load, so the sum never goes back between reads.
            return slot(READ_BYTES) + slot(WRITE_BYTES) + slot(BYTES);
        }
        return slot(counter);
    }

    private long slot(int counter) {
        return values.getLongVolatile(counter * Long.BYTES);
    }

    /** The counter's name, or null for an unused index. */
    public static String name(int counter) {
        return counter >= 0 && counter < SLOTS ? NAMES[counter] : null;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("{");
        for (int i = 0; i < SLOTS; i++) {
            if (NAMES[i] != null) {
                if (sb.length() > 1) {
                    sb.append(", ");
                }
                sb.append(NAMES[i]).append('=').append(get(i));
            }
        }
        return sb.append('}').toString();
    }
}
