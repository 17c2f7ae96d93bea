package io.vblk.vring;

/**
 * Why a split virtqueue cannot be used: a bad set-up or a ring the guest corrupted. Each value
 * names the virtio 1.2 clause it enforces. Hot-path methods return {@link #code()} (negative);
 * a queue that hit one is quarantined until {@link SplitQueue#reset()}.
 */
public enum QueueError {
    /** Set-up: queue size not a power of 2 in [1, 32768]. */
    QUEUE_SIZE_INVALID(-1, "2.7", "queue size is not a power of 2 between 1 and 32768"),
    /** Set-up: descriptor table address not a multiple of 16. */
    DESCRIPTOR_TABLE_MISALIGNED(-2, "2.7.1", "descriptor table address is not 16-aligned"),
    /** Set-up: available ring address not a multiple of 2. */
    AVAIL_RING_MISALIGNED(-3, "2.7.1", "available ring address is not 2-aligned"),
    /** Set-up: used ring address not a multiple of 4. */
    USED_RING_MISALIGNED(-4, "2.7.1", "used ring address is not 4-aligned"),
    /** Set-up or remap: descriptor table not inside one region of guest memory. */
    DESCRIPTOR_TABLE_NOT_MAPPED(-5, "2.7", "descriptor table is not inside one region of guest memory"),
    /** Set-up or remap: available ring not inside one region of guest memory. */
    AVAIL_RING_NOT_MAPPED(-6, "2.7", "available ring is not inside one region of guest memory"),
    /** Set-up or remap: used ring not inside one writable region of guest memory. */
    USED_RING_NOT_MAPPED(-7, "2.7", "used ring is not inside one writable region of guest memory"),

    /** avail.idx is more than queue size ahead of next_avail (or went backwards). */
    AVAIL_INDEX_AHEAD(-10, "2.7.6.1, 2.7.13",
            "available idx is more than queue size ahead of next_avail (or was decremented)"),
    /** An available ring entry names a head index >= queue size. */
    HEAD_OUT_OF_RANGE(-11, "2.7.5, 2.7.13.2", "available ring entry is not a descriptor index"),
    /** A {@code next} index >= queue size. */
    NEXT_OUT_OF_RANGE(-12, "2.7.5", "next is not a descriptor index"),
    /** A chain of more descriptors than the queue size: a loop. */
    CHAIN_TOO_LONG(-13, "2.7.5.2, 2.7.5.3.1", "descriptor chain is longer than the queue size (a loop)"),
    /** A device-readable descriptor after a device-writable one. */
    READABLE_AFTER_WRITABLE(-14, "2.7.4.2", "device-readable descriptor after a device-writable one"),
    /** A buffer some byte of which lies outside guest memory. */
    BUFFER_NOT_MAPPED(-15, "2.7.5", "buffer is not inside guest memory"),
    /** A device-writable buffer in a read-only region. */
    BUFFER_READ_ONLY(-16, "2.7.5", "device-writable buffer lies in read-only guest memory"),
    /** INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated. */
    INDIRECT_NOT_NEGOTIATED(-17, "2.7.5.3.1", "indirect descriptor but VIRTIO_F_INDIRECT_DESC was not negotiated"),
    /** INDIRECT and NEXT on the same descriptor. */
    INDIRECT_WITH_NEXT(-18, "2.7.5.3.1", "descriptor has both INDIRECT and NEXT"),
    /** INDIRECT inside an indirect table. */
    INDIRECT_NESTED(-19, "2.7.5.3.1", "indirect descriptor inside an indirect table"),
    /** Indirect table length zero or not a multiple of 16. */
    INDIRECT_BAD_LENGTH(-20, "2.7.5.3", "indirect table length is zero or not a multiple of 16"),
    /** Indirect table of more than 32768 entries. */
    INDIRECT_TOO_LARGE(-21, "2.7, 2.7.5.3", "indirect table has more than 32768 entries"),
    /** Indirect table not inside one region of guest memory. */
    INDIRECT_TABLE_NOT_MAPPED(-22, "2.7.5.3", "indirect table is not inside one region of guest memory"),
    /** A {@code next} index >= the indirect table's entries. */
    INDIRECT_NEXT_OUT_OF_RANGE(-23, "2.7.5.3", "next is not an index into the indirect table"),
    /** A chain in an indirect table longer than the table: a loop. */
    INDIRECT_CHAIN_TOO_LONG(-24, "2.7.5.3", "chain in an indirect table is longer than the table (a loop)");

    private static final QueueError[] BY_CODE = new QueueError[32];

    static {
        for (QueueError e : values()) {
            BY_CODE[-e.code] = e;
        }
    }

    private final int code;
    private final String clause;
    private final String description;

    QueueError(int code, String clause, String description) {
        this.code = code;
        this.clause = clause;
        this.description = description;
    }

    /** The negative code hot-path methods return. */
    public int code() {
        return code;
    }

    /** The virtio 1.2 section(s) the check enforces, e.g. {@code "2.7.5.3.1"}. */
    public String clause() {
        return clause;
    }

    /** What went wrong, in words. */
    public String description() {
        return description;
    }

    /** The error for a negative {@code code}, or null. */
    public static QueueError ofCode(int code) {
        return code < 0 && -code < BY_CODE.length ? BY_CODE[-code] : null;
    }

    @Override
    public String toString() {
        return name() + " (virtio 1.2 " + clause + ": " + description + ")";
    }
}
