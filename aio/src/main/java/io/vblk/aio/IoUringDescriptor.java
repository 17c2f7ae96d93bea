package io.vblk.aio;

/**
 * Layouts and constants of io_uring (linux/io_uring.h): {@code struct io_uring_params} with its
 * ring offsets, the submission queue entry and the completion queue entry.
 *
 * <pre>
 * struct io_uring_params (120 bytes)
 *   0 sq_entries u32 | 4 cq_entries u32 | 8 flags u32 | 12 sq_thread_cpu u32 | 16 sq_thread_idle u32
 *  20 features u32   | 24 wq_fd u32     | 28 resv[3]
 *  40 sq_off: head, tail, ring_mask, ring_entries, flags, dropped, array, resv1 (u32 each), user_addr u64
 *  80 cq_off: head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1 (u32 each), user_addr u64
 *
 * struct io_uring_sqe (64 bytes)
 *   0       1       2               4                               8
 *   +-------+-------+---------------+-------------------------------+
 *   |opcode | flags | ioprio    u16 | fd                        s32 |
 *   8 +-------+-------+---------------+-------------------------------+
 *   | off u64 (file offset)                                         |
 *  16 +---------------------------------------------------------------+
 *   | addr u64 (buffer or iovec array; FALLOCATE: the length)      |
 *  24 +-------------------------------+-------------------------------+
 *   | len u32 (bytes or iovec count; FALLOCATE: the mode) | op flags u32 (rw/fsync) |
 *  32 +-------------------------------+-------------------------------+
 *   | user_data u64                                                 |
 *  40 +---------------+---------------+-------------------------------+
 *   | buf_index u16 | personality   | splice_fd_in / file_index s32 |
 *  48 +---------------+---------------+-------------------------------+
 *   | addr3 u64                     | pad u64                       |
 *     +-------------------------------+-------------------------------+
 *
 * struct io_uring_cqe (16 bytes)
 *   | user_data u64 | res s32 | flags u32 |
 * </pre>
 *
 * Rings: the SQ ring (head, tail, mask, entries, flags, dropped, then an array of SQE indices)
 * and the CQ ring (head, tail, mask, entries, overflow, then the CQEs) share one mapping at
 * {@link #OFF_SQ_RING} when {@link #FEAT_SINGLE_MMAP} is offered; the SQEs are mapped at
 * {@link #OFF_SQES}. The kernel advances the SQ head and the CQ tail; user space the SQ tail and
 * the CQ head.
 */
final class IoUringDescriptor {
    // io_uring_params
    static final int PARAMS_SQ_ENTRIES_OFFSET = 0;
    static final int PARAMS_CQ_ENTRIES_OFFSET = 4;
    static final int PARAMS_FLAGS_OFFSET = 8;
    static final int PARAMS_FEATURES_OFFSET = 20;
    static final int PARAMS_SQ_OFF_OFFSET = 40;
    static final int PARAMS_CQ_OFF_OFFSET = 80;
    static final int PARAMS_LENGTH = 120;

    // io_sqring_offsets, relative to PARAMS_SQ_OFF_OFFSET
    static final int SQ_OFF_HEAD = 0;
    static final int SQ_OFF_TAIL = 4;
    static final int SQ_OFF_RING_MASK = 8;
    static final int SQ_OFF_RING_ENTRIES = 12;
    static final int SQ_OFF_FLAGS = 16;
    static final int SQ_OFF_DROPPED = 20;
    static final int SQ_OFF_ARRAY = 24;

    // io_cqring_offsets, relative to PARAMS_CQ_OFF_OFFSET
    static final int CQ_OFF_HEAD = 0;
    static final int CQ_OFF_TAIL = 4;
    static final int CQ_OFF_RING_MASK = 8;
    static final int CQ_OFF_RING_ENTRIES = 12;
    static final int CQ_OFF_OVERFLOW = 16;
    static final int CQ_OFF_CQES = 20;

    // io_uring_sqe
    static final int SQE_OPCODE_OFFSET = 0;
    static final int SQE_FLAGS_OFFSET = 1;
    static final int SQE_IOPRIO_OFFSET = 2;
    static final int SQE_FD_OFFSET = 4;
    static final int SQE_OFF_OFFSET = 8;
    static final int SQE_ADDR_OFFSET = 16;
    static final int SQE_LEN_OFFSET = 24;
    static final int SQE_OP_FLAGS_OFFSET = 28;
    static final int SQE_USER_DATA_OFFSET = 32;
    static final int SQE_BUF_INDEX_OFFSET = 40;
    static final int SQE_PERSONALITY_OFFSET = 42;
    static final int SQE_SPLICE_FD_IN_OFFSET = 44;
    static final int SQE_ADDR3_OFFSET = 48;
    static final int SQE_LENGTH = 64;

    // io_uring_cqe
    static final int CQE_USER_DATA_OFFSET = 0;
    static final int CQE_RES_OFFSET = 8;
    static final int CQE_FLAGS_OFFSET = 12;
    static final int CQE_LENGTH = 16;

    // opcodes
    static final byte OP_READV = 1;
    static final byte OP_WRITEV = 2;
    static final byte OP_FSYNC = 3;
    /**
     * Read into a registered buffer: {@code buf_index} names it, {@code addr} is the absolute
     * address inside it. The kernel uses the pages it pinned at registration instead of pinning
     * and importing the user pages per operation. Linux 5.1.
     */
    static final byte OP_READ_FIXED = 4;
    /** Write from a registered buffer (see {@link #OP_READ_FIXED}). Linux 5.1. */
    static final byte OP_WRITE_FIXED = 5;
    static final byte OP_FALLOCATE = 17;
    /** Read into one buffer (addr, len): no iovec for the kernel to copy in. Linux 5.6. */
    static final byte OP_READ = 22;
    /** Write from one buffer. Linux 5.6. */
    static final byte OP_WRITE = 23;

    /** fsync_flags: fdatasync rather than fsync. */
    static final int FSYNC_DATASYNC = 1;

    // mmap offsets
    static final long OFF_SQ_RING = 0L;
    static final long OFF_CQ_RING = 0x8000000L;
    static final long OFF_SQES = 0x10000000L;

    // setup flags and features
    /** Keep submitting after an SQE fails at submission (it gets an error CQE). Linux 5.18. */
    static final int SETUP_SUBMIT_ALL = 1 << 7;
    /**
     * Completions are not forced onto a running submitter with an inter-processor interrupt: they
     * are posted when it next enters or leaves the kernel. Linux 5.19.
     */
    static final int SETUP_COOP_TASKRUN = 1 << 8;
    /** With {@link #SETUP_COOP_TASKRUN}: {@link #SQ_TASKRUN} tells that completions wait to be posted. Linux 5.19. */
    static final int SETUP_TASKRUN_FLAG = 1 << 9;
    /** The ring starts disabled: registrations may be made, nothing entered, until {@link #REGISTER_ENABLE_RINGS}. Linux 5.10. */
    static final int SETUP_R_DISABLED = 1 << 6;
    /**
     * One task submits: the one that created the ring, or (with {@link #SETUP_R_DISABLED}) the one
     * that enabled it; io_uring_register and submissions from any other task fail with EEXIST. Linux 6.0.
     */
    static final int SETUP_SINGLE_ISSUER = 1 << 12;
    /**
     * Completions run only when the issuer enters with GETEVENTS (no task work interrupts it, and
     * a GETEVENTS enter from another task fails with EEXIST); needs {@link #SETUP_SINGLE_ISSUER}. Linux 6.1.
     */
    static final int SETUP_DEFER_TASKRUN = 1 << 13;
    static final int FEAT_SINGLE_MMAP = 1;
    static final int FEAT_NODROP = 1 << 1;
    /** Linux 5.6, the release that added {@link #OP_READ} and {@link #OP_WRITE}. */
    static final int FEAT_RW_CUR_POS = 1 << 3;

    // io_uring_enter flags
    static final int ENTER_GETEVENTS = 1;

    // sq ring flags
    static final int SQ_CQ_OVERFLOW = 1 << 1;
    /** Completions wait for the submitter to enter the kernel (see {@link #SETUP_TASKRUN_FLAG}). */
    static final int SQ_TASKRUN = 1 << 2;

    // sqe flags
    /** {@code fd} is an index into the ring's registered file table, not a descriptor. */
    static final byte SQE_FIXED_FILE = 1;
    /** IOSQE_ASYNC: always issue the operation from an io-wq worker, never inline in the submitting call. Linux 5.6. */
    static final byte SQE_ASYNC = 1 << 4;

    // io_uring_register opcodes
    /** Registers buffers (an iovec array); fails with EBUSY while some are registered. Linux 5.1. */
    static final int REGISTER_BUFFERS = 0;
    /** Drops the registered buffers (their pages are unpinned once no operation uses them). */
    static final int UNREGISTER_BUFFERS = 1;
    /** Registers a file table (an int array of descriptors); SQEs name them by index. */
    static final int REGISTER_FILES = 2;
    static final int REGISTER_EVENTFD = 4;
    /** Enables a ring set up with {@link #SETUP_R_DISABLED}; the calling task becomes a single issuer's owner. Linux 5.10. */
    static final int REGISTER_ENABLE_RINGS = 12;
    /**
     * Copies another ring's fixed-buffer table into this one, sharing its pinned pages (no new
     * pinning; struct io_uring_clone_buffers). Linux 6.12.
     */
    static final int REGISTER_CLONE_BUFFERS = 30;
    /** struct io_uring_clone_buffers: u32 src_fd, u32 flags, u32 src_off, u32 dst_off, u32 nr, u32 pad[3]. */
    static final int CLONE_BUFFERS_LENGTH = 32;

    /** The largest registered buffer: each iovec given to {@link #REGISTER_BUFFERS} is at most 1 GiB (SZ_1G). */
    static final long MAX_REGISTERED_BUFFER_BYTES = 1L << 30;
    /** The most registered buffers one ring holds (IORING_MAX_REG_BUFFERS). */
    static final int MAX_REGISTERED_BUFFERS = 1 << 14;
    // ring sleep (see RingPolls): readiness polls sharing the ring with the I/O
    /** Poll a descriptor (addr unused, len: {@link #POLL_ADD_MULTI}, op flags: the poll mask). Linux 5.1. */
    static final byte OP_POLL_ADD = 6;
    /** Remove a poll by its user data (in addr). Linux 5.1. */
    static final byte OP_POLL_REMOVE = 7;
    /** POLL_ADD's len flag: stay armed and post a CQE per wake-up (multishot). Linux 5.13. */
    static final int POLL_ADD_MULTI = 1;
    /** CQE flag: the multishot request that posted this CQE stays armed. */
    static final int CQE_F_MORE = 1 << 1;
    /** poll(2)'s POLLIN. */
    static final int POLLIN = 1;
    /** io_uring_enter takes a {@code struct io_uring_getevents_arg} (with a timeout). Linux 5.11. */
    static final int ENTER_EXT_ARG = 1 << 3;
    /** The kernel accepts {@link #ENTER_EXT_ARG}. Linux 5.11. */
    static final int FEAT_EXT_ARG = 1 << 8;
    /** Resource tags (Linux 5.13, the release with multishot poll, {@link #POLL_ADD_MULTI}). */
    static final int FEAT_RSRC_TAGS = 1 << 10;
    /** struct io_uring_getevents_arg: u64 sigmask, u32 sigmask_sz, u32 pad, u64 ts (a timespec pointer). */
    static final int GETEVENTS_ARG_LENGTH = 24;
    static final int GETEVENTS_ARG_TS_OFFSET = 16;
    /** io_uring_register: stops the kernel signalling the registered eventfd. */
    static final int UNREGISTER_EVENTFD = 5;

    /** The most entries io_uring_setup accepts. */
    static final int MAX_ENTRIES = 32768;

    private IoUringDescriptor() {
    }
}
