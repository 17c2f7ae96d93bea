package io.vblk.vring;

/**
 * Layout of the available ring (virtio 1.2 2.7.6), written by the driver, read by the device;
 * 6 + 2 * queue size bytes, 2-aligned, little-endian.
 *
 * <pre>
 *  +-----------+-----------+-----------+-----------+-----+-------------------+--------------+
 *  | flags u16 | idx u16   | ring[0]   | ring[1]   | ... | ring[size-1] u16  | used_event   |
 *  +-----------+-----------+-----------+-----------+-----+-------------------+--------------+
 *  0           2           4           6                  4 + 2*(size-1)      4 + 2*size
 * </pre>
 * {@code idx} is free-running: the driver's next slot is {@code idx % size}. {@code used_event}
 * exists only with VIRTIO_F_EVENT_IDX (2.7.7): interrupt me once used.idx passes it.
 */
public final class AvailRingDescriptor {
    /** Offset of {@code flags}. */
    public static final int FLAGS_OFFSET = 0;
    /** Offset of {@code idx}. */
    public static final int IDX_OFFSET = 2;
    /** Offset of {@code ring[0]}. */
    public static final int RING_OFFSET = 4;
    /** Size of a ring entry (a descriptor head index). */
    public static final int ENTRY_LENGTH = 2;
    /** Alignment of the available ring (2.7). */
    public static final int ALIGNMENT = 2;
    /** {@code flags}: the driver asks for no used-buffer notifications (without EVENT_IDX, 2.7.7). */
    public static final int F_NO_INTERRUPT = 1;

    private AvailRingDescriptor() {
    }

    /** Offset of {@code ring[slot]}. */
    public static int entryOffset(int slot) {
        return RING_OFFSET + slot * ENTRY_LENGTH;
    }

    /** Offset of {@code used_event}. */
    public static int usedEventOffset(int queueSize) {
        return RING_OFFSET + queueSize * ENTRY_LENGTH;
    }

    /** Bytes of the ring, {@code used_event} included (2.7: 6 + 2 * size). */
    public static int bytes(int queueSize) {
        return usedEventOffset(queueSize) + 2;
    }
}
