package io.vblk.sys;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * Writes an 8-byte 1 to a descriptor another process owns, through a private two-entry io_uring
 * (IORING_OP_WRITE), so that the calling thread can never block on it.
 *
 * <p>Why: a vhost-user frontend's call, error and kick eventfds share their open file
 * description with the frontend, which chooses whether they block, and we may not change the
 * flags. A plain {@code write(2)} to a blocking eventfd whose counter the frontend filled to
 * 0xfffffffffffffffe blocks forever; a pipe, socket or file passed in place of an eventfd can
 * block too. {@code pwritev2(RWF_NOWAIT)} is no way out: eventfd refuses it (EOPNOTSUPP, tried
 * on Linux 6.18), and a readiness check with poll(POLLOUT) races with a frontend that fills the
 * counter in between. Through io_uring a write to a non-blocking descriptor (QEMU's eventfds)
 * still runs inline in {@code io_uring_enter}; one that would block is handed to a kernel worker
 * or to io_uring's poll machinery, and only that parks. At most one write is outstanding: while
 * it is, further signals are coalesced (the reader will wake for the pending one anyway), so a
 * hostile frontend can park at most one kernel worker per descriptor. {@link #close()} closes the
 * ring, and the kernel cancels a parked write (it interrupts the worker) without waiting here.
 *
 * <p>One signalling thread at a time; no allocation or lock per signal; one syscall per signal,
 * as a plain write would take.
 */
final class UringSignal implements AutoCloseable {
    private static final int PARAMS_LENGTH = 120;
    private static final int PARAMS_FEATURES = 20;
    private static final int SQ_OFF = 40;
    private static final int CQ_OFF = 80;
    private static final int OFF_HEAD = 0;
    private static final int OFF_TAIL = 4;
    private static final int OFF_MASK = 8;
    private static final int SQ_OFF_ARRAY = 24;
    private static final int CQ_OFF_CQES = 20;
    private static final int SQE_LENGTH = 64;
    private static final int CQE_LENGTH = 16;
    private static final byte OP_WRITE = 23;
    private static final int FEAT_SINGLE_MMAP = 1;
    private static final long OFF_SQ_RING = 0L;
    private static final long OFF_CQ_RING = 0x8000000L;
    private static final long OFF_SQES = 0x10000000L;
    private static final int ENTRIES = 2;

    private final int target;
    private final int ringFd;
    private final Mapping sqMap;
    private final Mapping cqMap;
    private final Mapping sqeMap;
    private final UnsafeBuffer sq;
    private final UnsafeBuffer cq;
    private final UnsafeBuffer sqes;
    private final NativeBuffer one = new NativeBuffer(8, 8);
    private final int sqTail;
    private final int sqMask;
    private final int sqArray;
    private final int cqHead;
    private final int cqTail;
    private final int cqMask;
    private final int cqes;
    private int localTail;
    private int localCqHead;
    private int outstanding;
    private long lastResult;
    private boolean closed;

    /**
     * A signaller for {@code target} (the descriptor stays the caller's, and must stay open while
     * this is).
     *
     * @throws NativeException when io_uring cannot be set up
     */
    UringSignal(int target) {
        this.target = target;
        UnsafeBuffer params = new NativeBuffer(PARAMS_LENGTH).buffer();
        long fd = Native.syscall(Linux.SYS_IO_URING_SETUP, ENTRIES, params.addressOffset(), 0, 0, 0);
        if (fd < 0) {
            throw new NativeException((int) -fd, "io_uring_setup", ENTRIES, "params");
        }
        ringFd = (int) fd;
        Mapping s = null;
        Mapping c = null;
        Mapping e = null;
        try {
            int sqEntries = params.getInt(0);
            int cqEntries = params.getInt(4);
            long sqBytes = params.getInt(SQ_OFF + SQ_OFF_ARRAY) + (long) sqEntries * Integer.BYTES;
            long cqBytes = params.getInt(CQ_OFF + CQ_OFF_CQES) + (long) cqEntries * CQE_LENGTH;
            if ((params.getInt(PARAMS_FEATURES) & FEAT_SINGLE_MMAP) != 0) {
                s = Mapping.map(ringFd, OFF_SQ_RING, Math.max(sqBytes, cqBytes), false, false);
                c = s;
            } else {
                s = Mapping.map(ringFd, OFF_SQ_RING, sqBytes, false, false);
                c = Mapping.map(ringFd, OFF_CQ_RING, cqBytes, false, false);
            }
            e = Mapping.map(ringFd, OFF_SQES, (long) sqEntries * SQE_LENGTH, false, false);
        } catch (RuntimeException ex) {
            if (e != null) {
                e.close();
            }
            if (c != null && c != s) {
                c.close();
            }
            if (s != null) {
                s.close();
            }
            Native.libc().close(ringFd);
            throw ex;
        }
        sqMap = s;
        cqMap = c;
        sqeMap = e;
        sq = new UnsafeBuffer(s.address(), Math.toIntExact(s.length()));
        cq = new UnsafeBuffer(c.address(), Math.toIntExact(c.length()));
        sqes = new UnsafeBuffer(e.address(), Math.toIntExact(e.length()));
        sqTail = params.getInt(SQ_OFF + OFF_TAIL);
        sqMask = sq.getInt(params.getInt(SQ_OFF + OFF_MASK));
        sqArray = params.getInt(SQ_OFF + SQ_OFF_ARRAY);
        cqHead = params.getInt(CQ_OFF + OFF_HEAD);
        cqTail = params.getInt(CQ_OFF + OFF_TAIL);
        cqMask = cq.getInt(params.getInt(CQ_OFF + OFF_MASK));
        cqes = params.getInt(CQ_OFF + CQ_OFF_CQES);
        localTail = sq.getInt(sqTail);
        localCqHead = cq.getInt(cqHead);
        one.buffer().putLong(0, 1L);
    }

    /**
     * Adds one to the target's counter without blocking. Returns 0 when a write was started or
     * one is still pending (coalesced), or {@code -errno} when the kernel refused the submission
     * or the previous write failed.
     */
    int signal() {
        if (closed) {
            return -Errno.EBADF;
        }
        reap();
        if (outstanding > 0) {
            return 0;
        }
        int index = localTail & sqMask;
        int sqe = index * SQE_LENGTH;
        sqes.setMemory(sqe, SQE_LENGTH, (byte) 0);
        sqes.putByte(sqe, OP_WRITE);
        sqes.putInt(sqe + 4, target);
        sqes.putLong(sqe + 8, -1L); // the file position (no offset for eventfds, pipes, sockets)
        sqes.putLong(sqe + 16, one.address());
        sqes.putInt(sqe + 24, 8);
        sq.putInt(sqArray + index * Integer.BYTES, index);
        localTail++;
        sq.putIntOrdered(sqTail, localTail);
        long rc = Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, 1, 0, 0, 0);
        if (rc != 1) {
            // Not taken: forget the entry (the kernel did not consume it, so take it back).
            localTail--;
            sq.putIntOrdered(sqTail, localTail);
            return rc < 0 ? (int) rc : -Errno.EAGAIN;
        }
        outstanding++;
        reap();
        long previous = lastResult;
        lastResult = 0;
        return previous < 0 && previous != -Errno.EAGAIN ? (int) previous : 0;
    }

    /** Whether a write is still pending (parked in the kernel). */
    boolean pending() {
        reap();
        return outstanding > 0;
    }

    private void reap() {
        int tail = cq.getIntVolatile(cqTail);
        while (localCqHead != tail) {
            int cqe = cqes + (localCqHead & cqMask) * CQE_LENGTH;
            lastResult = cq.getInt(cqe + 8);
            localCqHead++;
            outstanding--;
        }
        cq.putIntOrdered(cqHead, localCqHead);
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        // Closing the ring cancels a parked write in the kernel's own time; nothing waits here.
        Native.libc().close(ringFd);
        sqeMap.close();
        if (cqMap != sqMap) {
            cqMap.close();
        }
        sqMap.close();
    }
}
