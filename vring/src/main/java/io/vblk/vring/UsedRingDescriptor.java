package io.vblk.vring;

/**
 * Layout of the used ring (virtio 1.2 2.7.8), written by the device, read by the driver;
 * 6 + 8 * queue size bytes, 4-aligned, little-endian.
 *
 * <pre>
 *  +-----------+-----------+---------------------+---------------------+-----+--------------+
 *  | flags u16 | idx u16   | ring[0]: id, len    | ring[1]: id, len    | ... | avail_event  |
 *  +-----------+-----------+---------------------+---------------------+-----+--------------+
 *  0           2           4                     12                         4 + 8*size
 *
 *  element: +----------------------------+----------------------------+
 *           | id (le32, head index)      | len (le32, bytes written)  |
 *           +----------------------------+----------------------------+
 *           0                            4                            8
 * </pre>
 * {@code avail_event} exists only with VIRTIO_F_EVENT_IDX (2.7.10): kick me once avail.idx
 * passes it. An element is written as one le64 ({@link #element(int, int)}).
 */
public final class UsedRingDescriptor {
    /** Offset of {@code flags}. */
    public static final int FLAGS_OFFSET = 0;
    /** Offset of {@code idx}. */
    public static final int IDX_OFFSET = 2;
    /** Offset of {@code ring[0]}. */
    public static final int RING_OFFSET = 4;
    /** Size of a used element. */
    public static final int ELEMENT_LENGTH = 8;
    /** Offset of {@code id} in an element. */
    public static final int ID_OFFSET = 0;
    /** Offset of {@code len} in an element. */
    public static final int LEN_OFFSET = 4;
    /** Alignment of the used ring (2.7). */
    public static final int ALIGNMENT = 4;
    /** {@code flags}: the device asks for no available-buffer notifications (without EVENT_IDX, 2.7.10). */
    public static final int F_NO_NOTIFY = 1;

    private UsedRingDescriptor() {
    }

    /** Offset of {@code ring[slot]}. */
    public static int elementOffset(int slot) {
        return RING_OFFSET + slot * ELEMENT_LENGTH;
    }

    /** Offset of {@code avail_event}. */
    public static int availEventOffset(int queueSize) {
        return RING_OFFSET + queueSize * ELEMENT_LENGTH;
    }

    /** Bytes of the ring, {@code avail_event} included (2.7: 6 + 8 * size). */
    public static int bytes(int queueSize) {
        return availEventOffset(queueSize) + 2;
    }

    /** An element as the le64 stored at {@link #elementOffset}: {@code id} low, {@code len} high. */
    public static long element(int id, int len) {
        return (id & 0xffff_ffffL) | ((long) len << 32);
    }

    /** {@code id} of an element read as le64. */
    public static int id(long element) {
        return (int) element;
    }

    /** {@code len} of an element read as le64. */
    public static int len(long element) {
        return (int) (element >>> 32);
    }
}
