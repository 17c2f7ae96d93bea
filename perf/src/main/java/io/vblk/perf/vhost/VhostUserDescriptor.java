package io.vblk.perf.vhost;

/**
 * The vhost-user message layout (QEMU docs/interop/vhost-user.rst), frontend's view. Every
 * message is a 12-byte header followed by {@code size} bytes of payload, little-endian;
 * descriptors travel as SCM_RIGHTS ancillary data of the same sendmsg.
 *
 * <pre>
 *  header:       u32 request @0 | u32 flags @4 | u32 size @8
 *  u64 payload:  u64 @12                     (features, SET_VRING_KICK/CALL/ERR: index | NOFD)
 *  vring state:  u32 index @12 | u32 num @16 (SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE reply)
 *  vring addr:   u32 index @12 | u32 flags @16 | u64 desc @20 | u64 used @28 | u64 avail @36 | u64 log @44
 *  memory table: u32 nregions @12 | u32 padding @16 | regions from @20, 32 bytes each:
 *                u64 guest_phys_addr @0 | u64 memory_size @8 | u64 userspace_addr @16 | u64 mmap_offset @24
 *  config:       u32 offset @12 | u32 size @16 | u32 flags @20 | u8 payload[size] @24
 * </pre>
 */
public final class VhostUserDescriptor {
    public static final int HEADER_LENGTH = 12;
    public static final int REQUEST_OFFSET = 0;
    public static final int FLAGS_OFFSET = 4;
    public static final int SIZE_OFFSET = 8;
    public static final int PAYLOAD_OFFSET = HEADER_LENGTH;
    /** Largest payload this frontend sends or accepts. */
    public static final int MAX_PAYLOAD = 4096;

    public static final int FLAG_VERSION = 0x1;
    public static final int FLAG_REPLY = 0x4;
    public static final int FLAG_NEED_REPLY = 0x8;

    public static final int STATE_INDEX_OFFSET = PAYLOAD_OFFSET;
    public static final int STATE_NUM_OFFSET = PAYLOAD_OFFSET + 4;
    public static final int STATE_LENGTH = 8;

    public static final int ADDR_INDEX_OFFSET = PAYLOAD_OFFSET;
    public static final int ADDR_FLAGS_OFFSET = PAYLOAD_OFFSET + 4;
    public static final int ADDR_DESC_OFFSET = PAYLOAD_OFFSET + 8;
    public static final int ADDR_USED_OFFSET = PAYLOAD_OFFSET + 16;
    public static final int ADDR_AVAIL_OFFSET = PAYLOAD_OFFSET + 24;
    public static final int ADDR_LOG_OFFSET = PAYLOAD_OFFSET + 32;
    public static final int ADDR_LENGTH = 40;

    public static final int MEM_NREGIONS_OFFSET = PAYLOAD_OFFSET;
    public static final int MEM_REGIONS_OFFSET = PAYLOAD_OFFSET + 8;
    public static final int REGION_GPA_OFFSET = 0;
    public static final int REGION_SIZE_OFFSET = 8;
    public static final int REGION_USER_ADDR_OFFSET = 16;
    public static final int REGION_MMAP_OFFSET = 24;
    public static final int REGION_LENGTH = 32;

    public static final int CONFIG_OFFSET_OFFSET = PAYLOAD_OFFSET;
    public static final int CONFIG_SIZE_OFFSET = PAYLOAD_OFFSET + 4;
    public static final int CONFIG_FLAGS_OFFSET = PAYLOAD_OFFSET + 8;
    public static final int CONFIG_DATA_OFFSET = PAYLOAD_OFFSET + 12;
    public static final int CONFIG_HEADER_LENGTH = 12;
    /** What QEMU 7.2 asks of a vhost-user-blk backend: struct virtio_blk_config up to write_zeroes_may_unmap. */
    public static final int BLK_CONFIG_LENGTH = 57;

    /** SET_VRING_KICK/CALL/ERR payload: the queue index sits in the low byte. */
    public static final long VRING_INDEX_MASK = 0xff;

    public static final int GET_FEATURES = 1;
    public static final int SET_FEATURES = 2;
    public static final int SET_OWNER = 3;
    public static final int SET_MEM_TABLE = 5;
    public static final int SET_VRING_NUM = 8;
    public static final int SET_VRING_ADDR = 9;
    public static final int SET_VRING_BASE = 10;
    public static final int GET_VRING_BASE = 11;
    public static final int SET_VRING_KICK = 12;
    public static final int SET_VRING_CALL = 13;
    public static final int SET_VRING_ERR = 14;
    public static final int GET_PROTOCOL_FEATURES = 15;
    public static final int SET_PROTOCOL_FEATURES = 16;
    public static final int GET_QUEUE_NUM = 17;
    public static final int SET_VRING_ENABLE = 18;
    public static final int GET_CONFIG = 24;

    /** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
    public static final int PROTOCOL_MQ = 0;
    public static final int PROTOCOL_REPLY_ACK = 3;
    public static final int PROTOCOL_CONFIG = 9;

    /** Virtio feature bit 30: the backend speaks protocol features; rings then start disabled. */
    public static final int F_PROTOCOL_FEATURES = 30;

    private VhostUserDescriptor() {
    }
}
