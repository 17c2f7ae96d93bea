package io.vblk.aio;

/**
 * Layouts of Linux native AIO (linux/aio_abi.h and fs/aio.c): {@code struct iocb}, {@code struct
 * io_event}, and the header of the completion ring the kernel maps at the context address.
 *
 * <pre>
 * struct iocb (64 bytes)
 *   0                               8               12              16      18      20
 *   +-------------------------------+---------------+---------------+-------+-------+---------------+
 *   | aio_data                  u64 | aio_key   u32 | rw_flags  u32 | opcode| prio  | aio_fildes u32|
 *  24 +-------------------------------+---------------+---------------+-------+-------+---------------+
 *   | aio_buf u64 (buffer, or iovec array for PREADV/PWRITEV)  | aio_nbytes u64 (bytes, or iovec count) |
 *  40 +-------------------------------+-------------------------------+---------------+---------------+
 *   | aio_offset                s64 | aio_reserved2             u64 | aio_flags u32 | aio_resfd u32 |
 *     +-------------------------------+-------------------------------+---------------+---------------+
 *
 * struct io_event (32 bytes)
 *   | data u64 (the iocb's aio_data) | obj u64 (the iocb's address) | res s64 | res2 s64 |
 *
 * struct aio_ring header (32 bytes), then nr io_events
 *   | id u32 | nr u32 | head u32 | tail u32 | magic u32 | compat u32 | incompat u32 | header_length u32 |
 * </pre>
 *
 * The kernel writes an event, then (after a write barrier) {@code tail}; user space may read
 * events between {@code head} and {@code tail} and advance {@code head} itself, as long as
 * {@code magic} is {@link #RING_MAGIC}, {@code incompat} is 0, and nobody else reaps the context.
 */
final class LinuxAioDescriptor {
    // iocb
    static final int IOCB_DATA_OFFSET = 0;
    static final int IOCB_KEY_OFFSET = 8;
    static final int IOCB_RW_FLAGS_OFFSET = 12;
    static final int IOCB_OPCODE_OFFSET = 16;
    static final int IOCB_REQPRIO_OFFSET = 18;
    static final int IOCB_FILDES_OFFSET = 20;
    static final int IOCB_BUF_OFFSET = 24;
    static final int IOCB_NBYTES_OFFSET = 32;
    static final int IOCB_OFFSET_OFFSET = 40;
    static final int IOCB_RESERVED2_OFFSET = 48;
    static final int IOCB_FLAGS_OFFSET = 56;
    static final int IOCB_RESFD_OFFSET = 60;
    static final int IOCB_LENGTH = 64;

    static final short IOCB_CMD_FDSYNC = 3;
    static final short IOCB_CMD_PREADV = 7;
    static final short IOCB_CMD_PWRITEV = 8;
    /** Signal {@code aio_resfd} (an eventfd) when the iocb completes. */
    static final int IOCB_FLAG_RESFD = 1;

    // io_event
    static final int EVENT_DATA_OFFSET = 0;
    static final int EVENT_OBJ_OFFSET = 8;
    static final int EVENT_RES_OFFSET = 16;
    static final int EVENT_RES2_OFFSET = 24;
    static final int EVENT_LENGTH = 32;

    // aio_ring header
    static final int RING_ID_OFFSET = 0;
    static final int RING_NR_OFFSET = 4;
    static final int RING_HEAD_OFFSET = 8;
    static final int RING_TAIL_OFFSET = 12;
    static final int RING_MAGIC_OFFSET = 16;
    static final int RING_COMPAT_OFFSET = 20;
    static final int RING_INCOMPAT_OFFSET = 24;
    static final int RING_HEADER_LENGTH_OFFSET = 28;
    static final int RING_HEADER_LENGTH = 32;
    static final int RING_MAGIC = 0xa10a10a1;

    // struct timespec, for io_getevents
    static final int TIMESPEC_SEC_OFFSET = 0;
    static final int TIMESPEC_NSEC_OFFSET = 8;
    static final int TIMESPEC_LENGTH = 16;

    private LinuxAioDescriptor() {
    }
}
