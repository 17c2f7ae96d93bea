package io.vblk.vhost;

/**
 * Layout of a vhost-user message and of every payload vblk reads or writes (QEMU
 * {@code docs/interop/vhost-user.rst}, "Message types"). Little-endian, no padding between header
 * and payload; descriptors travel beside the bytes as SCM_RIGHTS ancillary data.
 *
 * <pre>
 * header (12 bytes)
 *   0               4               8               12
 *   +---------------+---------------+---------------+---------------------------+
 *   | u32 request   | u32 flags     | u32 size      | payload (size bytes) ...  |
 *   +---------------+---------------+---------------+---------------------------+
 *   flags: bits 0-1 version (1), bit 2 reply, bit 3 need_reply
 *
 * u64 (8)                      features, protocol features, counts, fd index:
 *   +-------------------------------+   bits 0-7 vring index, bit 8 "no fd" for KICK/CALL/ERR
 *   | u64 value                     |
 *   +-------------------------------+
 *
 * vring state (8)              SET_VRING_NUM / _BASE / _ENABLE, GET_VRING_BASE
 *   +---------------+---------------+
 *   | u32 index     | u32 num       |
 *   +---------------+---------------+
 *
 * vring address (40)           SET_VRING_ADDR (addresses in the frontend's virtual space)
 *   +---------------+---------------+-----------------+-----------------+------------------+------------------+
 *   | u32 index     | u32 flags     | u64 desc @8     | u64 used @16    | u64 avail @24    | u64 log @32      |
 *   +---------------+---------------+-----------------+-----------------+------------------+------------------+
 *
 * memory region (32)
 *   +---------------------+---------------------+-----------------------+---------------------+
 *   | u64 guest_phys_addr | u64 memory_size @8  | u64 userspace_addr @16| u64 mmap_offset @24 |
 *   +---------------------+---------------------+-----------------------+---------------------+
 *
 * memory table (8 + 32 n)      SET_MEM_TABLE, one descriptor per region
 *   +---------------+---------------+------------------------+
 *   | u32 nregions  | u32 padding   | n x memory region @8   |
 *   +---------------+---------------+------------------------+
 *
 * single region (40)           ADD_MEM_REG (one descriptor), REM_MEM_REG
 *   +-------------------------------+------------------------+
 *   | u64 padding                   | memory region @8       |
 *   +-------------------------------+------------------------+
 *
 * config (12 + size)           GET_CONFIG, SET_CONFIG
 *   +---------------+---------------+---------------+-------------------+
 *   | u32 offset    | u32 size      | u32 flags     | u8 payload[size]  |
 *   +---------------+---------------+---------------+-------------------+
 *
 * inflight (24)                GET_INFLIGHT_FD request and reply (the reply with one descriptor),
 *                              SET_INFLIGHT_FD (one descriptor); see InflightDescriptor
 *   +-----------------+-------------------+-------------------+-------------------+--------------+
 *   | u64 mmap_size   | u64 mmap_offset @8| u16 num_queues @16| u16 queue_size @18| padding @20  |
 *   +-----------------+-------------------+-------------------+-------------------+--------------+
 *   the C struct's natural alignment pads it to 24 bytes, and QEMU sends sizeof() of it
 * </pre>
 */
final class MessageDescriptor {
    // ---------------------------------------------------------------- header
    static final int REQUEST_OFFSET = 0;
    static final int FLAGS_OFFSET = 4;
    static final int SIZE_OFFSET = 8;
    static final int HEADER_LENGTH = 12;

    /** The only protocol version there is. */
    static final int VERSION = 0x1;
    static final int VERSION_MASK = 0x3;
    static final int FLAG_REPLY = 0x4;
    static final int FLAG_NEED_REPLY = 0x8;
    /** Flags a frontend may set on a request: version and need_reply. */
    static final int REQUEST_FLAGS = VERSION_MASK | FLAG_NEED_REPLY;

    /**
     * Largest payload read off the socket. Every request vblk understands is far smaller (the
     * largest, GET_CONFIG, is 268 bytes); a page lets an unknown request be read whole and
     * answered, and anything longer is taken as a broken stream.
     */
    static final int MAX_PAYLOAD_LENGTH = 4096;

    // ---------------------------------------------------------------- u64
    static final int U64_LENGTH = 8;
    static final long FD_INDEX_MASK = 0xff;
    static final long FD_NOFD_MASK = 0x100;

    // ---------------------------------------------------------------- vring state
    static final int STATE_INDEX_OFFSET = 0;
    static final int STATE_NUM_OFFSET = 4;
    static final int STATE_LENGTH = 8;

    // ---------------------------------------------------------------- vring address
    static final int ADDR_INDEX_OFFSET = 0;
    static final int ADDR_FLAGS_OFFSET = 4;
    static final int ADDR_DESC_OFFSET = 8;
    static final int ADDR_USED_OFFSET = 16;
    static final int ADDR_AVAIL_OFFSET = 24;
    static final int ADDR_LOG_OFFSET = 32;
    static final int ADDR_LENGTH = 40;

    // ---------------------------------------------------------------- memory region
    static final int REGION_GUEST_ADDR_OFFSET = 0;
    static final int REGION_SIZE_OFFSET = 8;
    static final int REGION_USER_ADDR_OFFSET = 16;
    static final int REGION_MMAP_OFFSET_OFFSET = 24;
    static final int REGION_LENGTH = 32;

    // ---------------------------------------------------------------- memory table
    static final int TABLE_NREGIONS_OFFSET = 0;
    static final int TABLE_PADDING_OFFSET = 4;
    static final int TABLE_REGIONS_OFFSET = 8;
    /** Regions one SET_MEM_TABLE carries at most (the spec's VHOST_MEMORY_BASELINE_NREGIONS). */
    static final int TABLE_MAX_REGIONS = 8;

    // ---------------------------------------------------------------- single region
    static final int SINGLE_REGION_PADDING_OFFSET = 0;
    static final int SINGLE_REGION_OFFSET = 8;
    static final int SINGLE_REGION_LENGTH = SINGLE_REGION_OFFSET + REGION_LENGTH;

    // ---------------------------------------------------------------- config
    static final int CONFIG_OFFSET_OFFSET = 0;
    static final int CONFIG_SIZE_OFFSET = 4;
    static final int CONFIG_FLAGS_OFFSET = 8;
    static final int CONFIG_PAYLOAD_OFFSET = 12;
    /** Largest config space a message may carry (the spec's VHOST_USER_MAX_CONFIG_SIZE). */
    static final int CONFIG_MAX_SIZE = 256;

    // ---------------------------------------------------------------- inflight
    static final int INFLIGHT_MMAP_SIZE_OFFSET = 0;
    static final int INFLIGHT_MMAP_OFFSET_OFFSET = 8;
    static final int INFLIGHT_NUM_QUEUES_OFFSET = 16;
    static final int INFLIGHT_QUEUE_SIZE_OFFSET = 18;
    static final int INFLIGHT_LENGTH = 24;

    private MessageDescriptor() {
    }

    /** Payload length of a SET_MEM_TABLE with {@code regions} regions. */
    static int tableLength(int regions) {
        return TABLE_REGIONS_OFFSET + regions * REGION_LENGTH;
    }

    /** Offset of region {@code i} in a SET_MEM_TABLE payload. */
    static int tableRegionOffset(int i) {
        return TABLE_REGIONS_OFFSET + i * REGION_LENGTH;
    }
}
