package io.vblk.block.qcow2;

/**
 * The qcow2 on-disk layout (QEMU {@code docs/interop/qcow2.txt}), all fields big-endian.
 *
 * <pre>
 *  header (v2: 72 bytes, v3: header_length)
 *   0 magic 'QFI\xfb'    4 version          8 backing_file_offset  16 backing_file_size
 *  20 cluster_bits      24 size (virtual)  32 crypt_method         36 l1_size
 *  40 l1_table_offset   48 refcount_table_offset                   56 refcount_table_clusters
 *  60 nb_snapshots      64 snapshots_offset
 *  v3: 72 incompatible_features  80 compatible_features  88 autoclear_features
 *      96 refcount_order         100 header_length       104 compression_type (if length > 104)
 *  then header extensions: u32 type, u32 length, data padded to 8 bytes; type 0 ends them.
 *
 *  L1 entry:  bits 9-55 L2 table offset, bit 63 COPIED (refcount 1); the rest reserved (0)
 *  L2 entry:  bit 63 COPIED, bit 62 COMPRESSED; standard: bits 9-55 host cluster offset,
 *             bit 0 reads as zeros (v3); compressed: bits 0..x-1 host byte offset,
 *             bits x..61 additional 512-byte sectors, with x = 62 - (cluster_bits - 8)
 *  refcount table entry: bits 9-63 refcount block offset; refcount block: 2^refcount_order-bit
 *             big-endian refcounts, one per host cluster
 * </pre>
 */
final class Qcow2Descriptor {
    private Qcow2Descriptor() {
    }

    static final int MAGIC = 0x514649fb;
    static final int MAGIC_OFFSET = 0;
    static final int VERSION_OFFSET = 4;
    static final int BACKING_FILE_OFFSET_OFFSET = 8;
    static final int BACKING_FILE_SIZE_OFFSET = 16;
    static final int CLUSTER_BITS_OFFSET = 20;
    static final int SIZE_OFFSET = 24;
    static final int CRYPT_METHOD_OFFSET = 32;
    static final int L1_SIZE_OFFSET = 36;
    static final int L1_TABLE_OFFSET_OFFSET = 40;
    static final int REFCOUNT_TABLE_OFFSET_OFFSET = 48;
    static final int REFCOUNT_TABLE_CLUSTERS_OFFSET = 56;
    static final int NB_SNAPSHOTS_OFFSET = 60;
    static final int SNAPSHOTS_OFFSET_OFFSET = 64;
    static final int INCOMPATIBLE_FEATURES_OFFSET = 72;
    static final int COMPATIBLE_FEATURES_OFFSET = 80;
    static final int AUTOCLEAR_FEATURES_OFFSET = 88;
    static final int REFCOUNT_ORDER_OFFSET = 96;
    static final int HEADER_LENGTH_OFFSET = 100;
    static final int COMPRESSION_TYPE_OFFSET = 104;

    static final int V2_HEADER_LENGTH = 72;
    static final int V3_MIN_HEADER_LENGTH = 104;

    static final long INCOMPAT_DIRTY = 1L;
    static final long INCOMPAT_CORRUPT = 1L << 1;
    static final long INCOMPAT_EXTERNAL_DATA = 1L << 2;
    static final long INCOMPAT_COMPRESSION_TYPE = 1L << 3;
    static final long INCOMPAT_EXTENDED_L2 = 1L << 4;
    static final long INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION_TYPE;
    static final long COMPAT_LAZY_REFCOUNTS = 1L;

    static final int COMPRESSION_DEFLATE = 0;
    static final int COMPRESSION_ZSTD = 1;

    static final int EXT_END = 0;
    static final int EXT_BACKING_FORMAT = 0xe2792aca;
    static final int EXT_FEATURE_NAMES = 0x6803f857;
    static final int EXT_BITMAPS = 0x23852875;
    static final int EXT_ENCRYPTION = 0x0537be77;
    static final int EXT_DATA_FILE = 0x44415441;

    /** QEMU's limits: clusters of 512 B to 2 MiB. */
    static final int MIN_CLUSTER_BITS = 9;
    static final int MAX_CLUSTER_BITS = 21;
    /** QEMU refuses L1 tables over 32 MiB and refcount tables over 8 MiB. */
    static final long MAX_L1_BYTES = 32L << 20;
    static final long MAX_REFTABLE_BYTES = 8L << 20;
    /** The largest virtual disk accepted (QEMU: 32 PiB, bounded by the L1 limit anyway). */
    static final long MAX_VIRTUAL_SIZE = 1L << 55;

    static final long L1E_OFFSET_MASK = 0x00ff_ffff_ffff_fe00L;
    static final long L2E_OFFSET_MASK = 0x00ff_ffff_ffff_fe00L;
    static final long REFT_OFFSET_MASK = 0xffff_ffff_ffff_fe00L;
    static final long OFLAG_COPIED = 1L << 63;
    static final long OFLAG_COMPRESSED = 1L << 62;
    static final long OFLAG_ZERO = 1L;
    /** Bits of a standard L2 entry that must be zero: 1-8 and 56-61. */
    static final long L2E_STD_RESERVED = 0x3f00_0000_0000_01feL;
    /** Bits of an L1 entry that must be zero: 0-8 and 56-62. */
    static final long L1E_RESERVED = 0x7f00_0000_0000_01ffL;

    static final int SECTOR_BYTES = 512;
}
