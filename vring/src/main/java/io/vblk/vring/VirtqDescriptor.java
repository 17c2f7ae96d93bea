package io.vblk.vring;

/**
 * Layout of a split-virtqueue descriptor (virtio 1.2 2.7.5), 16 bytes, little-endian, in the
 * descriptor table (16 * queue size bytes, 16-aligned) or in an indirect table (2.7.5.3).
 *
 * <pre>
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |                      addr (le64, guest-physical)              |
 *  |                                                               |
 *  +---------------------------------------------------------------+
 *  |                      len (le32, bytes)                        |
 *  +-------------------------------+-------------------------------+
 *  |      flags (le16)             |      next (le16)              |
 *  +-------------------------------+-------------------------------+
 * </pre>
 * {@code flags} and {@code next} are read together as one le32 at {@link #FLAGS_OFFSET}
 * ({@link #flags(int)}, {@link #next(int)}), so a descriptor is three loads and each field is
 * fetched exactly once.
 */
public final class VirtqDescriptor {
    /** Offset of {@code addr}. */
    public static final int ADDR_OFFSET = 0;
    /** Offset of {@code len}. */
    public static final int LEN_OFFSET = 8;
    /** Offset of {@code flags} (and, read as le32, of {@code flags | next << 16}). */
    public static final int FLAGS_OFFSET = 12;
    /** Offset of {@code next}. */
    public static final int NEXT_OFFSET = 14;
    /** Size of one descriptor, and the alignment of the descriptor table (2.7). */
    public static final int LENGTH = 16;
    /** Alignment of the descriptor table (2.7). */
    public static final int ALIGNMENT = 16;

    /** The buffer continues via {@code next}. */
    public static final int F_NEXT = 1;
    /** The buffer is device-writable (otherwise device-readable). */
    public static final int F_WRITE = 2;
    /** The buffer is an indirect descriptor table (2.7.5.3). */
    public static final int F_INDIRECT = 4;

    private VirtqDescriptor() {
    }

    /** Offset of descriptor {@code index} in a table. */
    public static int offset(int index) {
        return index * LENGTH;
    }

    /** Bytes of a table of {@code entries} descriptors. */
    public static long tableBytes(int entries) {
        return (long) entries * LENGTH;
    }

    /** {@code flags} from the le32 at {@link #FLAGS_OFFSET}. */
    public static int flags(int flagsAndNext) {
        return flagsAndNext & 0xffff;
    }

    /** {@code next} from the le32 at {@link #FLAGS_OFFSET}. */
    public static int next(int flagsAndNext) {
        return flagsAndNext >>> 16;
    }
}
