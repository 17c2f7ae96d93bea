package io.vblk.aio;

/**
 * Layout of {@code struct statx} (linux/stat.h) and the constants of statx(2), used to learn the
 * real O_DIRECT alignment of an image (STATX_DIOALIGN, Linux 6.1+).
 *
 * <pre>
 *   0                   4                   8                                      16
 *   +-------------------+-------------------+---------------------------------------+
 *   | stx_mask      u32 | stx_blksize   u32 | stx_attributes                    u64 |
 *  16 +-------------------+-------------------+-------------------+---------+---------+
 *   | stx_nlink     u32 | stx_uid       u32 | stx_gid       u32 | mode u16| spare   |
 *  32 +-------------------+-------------------+-------------------+---------+---------+
 *   | stx_ino, stx_size, stx_blocks, stx_attributes_mask: u64 each        (32 .. 64) |
 *  64 | stx_atime, stx_btime, stx_ctime, stx_mtime: 16 bytes each          (64 .. 128) |
 * 128 | rdev_major, rdev_minor, dev_major, dev_minor: u32 each            (128 .. 144) |
 * 144 | stx_mnt_id                                                    u64 (144 .. 152) |
 * 152 +-------------------+-------------------+---------------------------------------+
 *   | dio_mem_align u32 | dio_offset_align u32 | spare: 12 x u64                (.. 256) |
 *     +-------------------+-------------------+---------------------------------------+
 * </pre>
 */
final class StatxDescriptor {
    /** statx(2) on x86-64. */
    static final long SYS_STATX = 332;
    /** dirfd is the file itself when the path is empty. */
    static final int AT_EMPTY_PATH = 0x1000;

    static final int STATX_TYPE = 0x1;
    static final int STATX_SIZE = 0x200;
    static final int STATX_DIOALIGN = 0x2000;

    static final int S_IFMT = 0170000;
    static final int S_IFBLK = 0060000;

    static final int MASK_OFFSET = 0;
    static final int BLKSIZE_OFFSET = 4;
    static final int MODE_OFFSET = 28;
    static final int SIZE_OFFSET = 40;
    static final int DIO_MEM_ALIGN_OFFSET = 152;
    static final int DIO_OFFSET_ALIGN_OFFSET = 156;
    static final int LENGTH = 256;

    private StatxDescriptor() {
    }
}
