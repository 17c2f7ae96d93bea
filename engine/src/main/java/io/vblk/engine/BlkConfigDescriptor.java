package io.vblk.engine;

/**
 * struct virtio_blk_config (virtio 1.2 5.2.4), little-endian; 60 bytes as laid out here, of
 * which QEMU 7.2 reads the first 57.
 *
 * <pre>
 *  @0  le64 capacity (512-byte sectors)     @32 u8   writeback
 *  @8  le32 size_max                        @33 u8   unused0
 *  @12 le32 seg_max                         @34 le16 num_queues
 *  @16 geometry: le16 cylinders, u8 heads,  @36 le32 max_discard_sectors
 *      u8 sectors                           @40 le32 max_discard_seg
 *  @20 le32 blk_size                        @44 le32 discard_sector_alignment
 *  @24 u8 physical_block_exp                @48 le32 max_write_zeroes_sectors
 *  @25 u8 alignment_offset                  @52 le32 max_write_zeroes_seg
 *  @26 le16 min_io_size                     @56 u8   write_zeroes_may_unmap
 *  @28 le32 opt_io_size                     @57 u8[3] unused1
 * </pre>
 */
public final class BlkConfigDescriptor {
    public static final int CAPACITY = 0;
    public static final int SIZE_MAX = 8;
    public static final int SEG_MAX = 12;
    public static final int GEOMETRY_CYLINDERS = 16;
    public static final int GEOMETRY_HEADS = 18;
    public static final int GEOMETRY_SECTORS = 19;
    public static final int BLK_SIZE = 20;
    public static final int PHYSICAL_BLOCK_EXP = 24;
    public static final int ALIGNMENT_OFFSET = 25;
    public static final int MIN_IO_SIZE = 26;
    public static final int OPT_IO_SIZE = 28;
    public static final int WRITEBACK = 32;
    public static final int NUM_QUEUES = 34;
    public static final int MAX_DISCARD_SECTORS = 36;
    public static final int MAX_DISCARD_SEG = 40;
    public static final int DISCARD_SECTOR_ALIGNMENT = 44;
    public static final int MAX_WRITE_ZEROES_SECTORS = 48;
    public static final int MAX_WRITE_ZEROES_SEG = 52;
    public static final int WRITE_ZEROES_MAY_UNMAP = 56;
    public static final int LENGTH = 60;

    private BlkConfigDescriptor() {
    }
}
