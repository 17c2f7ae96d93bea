package io.vblk.engine;

/**
 * The virtio-blk request layout (virtio 1.2 5.2.6): a device-readable header, data, and a
 * device-writable status byte that is the last byte of the last writable descriptor.
 *
 * <pre>
 *   0               4               8                              16
 *   +---------------+---------------+------------------------------+
 *   | le32 type     | le32 reserved | le64 sector (512-byte units) |
 *   +---------------+---------------+------------------------------+
 *   | data ...  (IN: device-writable, OUT: device-readable)        |
 *   +---------------------------------------------------------------+
 *   | u8 status |
 *   +-----------+
 *
 * discard / write-zeroes segment (5.2.6.2), 16 bytes each:
 *   le64 sector @0, le32 num_sectors @8, le32 flags @12 (bit 0: unmap)
 * </pre>
 */
public final class BlkRequestDescriptor {
    public static final int TYPE_OFFSET = 0;
    public static final int RESERVED_OFFSET = 4;
    public static final int SECTOR_OFFSET = 8;
    public static final int HEADER_LENGTH = 16;

    public static final int SEGMENT_SECTOR_OFFSET = 0;
    public static final int SEGMENT_NUM_SECTORS_OFFSET = 8;
    public static final int SEGMENT_FLAGS_OFFSET = 12;
    public static final int SEGMENT_LENGTH = 16;
    public static final int SEGMENT_FLAG_UNMAP = 1;

    /** Sector size of the protocol, whatever the disk's block size (5.2.6). */
    public static final int SECTOR_SIZE = 512;
    public static final int SECTOR_SHIFT = 9;
    /** GET_ID answers with 20 bytes, NUL-padded (5.2.6). */
    public static final int ID_LENGTH = 20;

    public static final int T_IN = 0;
    public static final int T_OUT = 1;
    public static final int T_FLUSH = 4;
    public static final int T_GET_ID = 8;
    public static final int T_GET_LIFETIME = 10;
    public static final int T_DISCARD = 11;
    public static final int T_WRITE_ZEROES = 13;
    public static final int T_SECURE_ERASE = 14;

    public static final byte S_OK = 0;
    public static final byte S_IOERR = 1;
    public static final byte S_UNSUPP = 2;

    private BlkRequestDescriptor() {
    }
}
