package io.vblk.aio;

/**
 * Layout of {@code struct iovec} (sys/uio.h), the scatter-gather element of preadv/pwritev,
 * IOCB_CMD_PREADV/PWRITEV and IORING_OP_READV/WRITEV.
 *
 * <pre>
 *   0                               8                              16
 *   +-------------------------------+-------------------------------+
 *   | iov_base                  u64 | iov_len                   u64 |
 *   +-------------------------------+-------------------------------+
 * </pre>
 */
final class IovecDescriptor {
    static final int BASE_OFFSET = 0;
    static final int LENGTH_OFFSET = 8;
    static final int LENGTH = 16;

    /** The kernel's limit on iovecs per call (UIO_MAXIOV). */
    static final int MAX_IOVECS = 1024;

    private IovecDescriptor() {
    }
}
