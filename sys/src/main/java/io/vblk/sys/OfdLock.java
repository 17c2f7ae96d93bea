package io.vblk.sys;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * Open-file-description byte-range locks (fcntl {@code F_OFD_SETLK} / {@code F_OFD_GETLK}), the
 * kind QEMU's file-posix driver takes on image files.
 *
 * <p>An OFD lock belongs to the open file description, not to the process: every descriptor
 * that shares the description (a dup, a descriptor passed over a socket, an io_uring registered
 * file) shares the lock, and the lock goes away when the last of them closes, or when the
 * process dies. Two descriptions of one file conflict even inside one process, unlike classic
 * POSIX record locks (which also vanish when the process closes any descriptor of the file).
 * Calls here never block ({@code F_OFD_SETLK}, not {@code F_OFD_SETLKW}).
 *
 * <pre>
 * struct flock (x86-64, 32 bytes)
 *   0  short l_type     F_RDLCK 0, F_WRLCK 1, F_UNLCK 2
 *   2  short l_whence   SEEK_SET
 *   8  off_t l_start
 *  16  off_t l_len
 *  24  pid_t l_pid      must be 0 for OFD commands; F_OFD_GETLK answers -1
 * </pre>
 */
public final class OfdLock {
    /** fcntl(2) on x86-64, called as a raw syscall (libc's fcntl is variadic). */
    static final long SYS_FCNTL = 72;
    public static final int F_OFD_GETLK = 36;
    public static final int F_OFD_SETLK = 37;
    public static final short F_RDLCK = 0;
    public static final short F_WRLCK = 1;
    public static final short F_UNLCK = 2;

    static final int LENGTH = 32;
    static final int TYPE_OFFSET = 0;
    static final int WHENCE_OFFSET = 2;
    static final int START_OFFSET = 8;
    static final int LEN_OFFSET = 16;
    static final int PID_OFFSET = 24;

    private OfdLock() {
    }

    /**
     * Takes a shared (read) lock on {@code [start, start + length)}; returns 0 or {@code -errno}
     * ({@code -EAGAIN} when another description holds an exclusive lock there, {@code -EINVAL}
     * or {@code -EOPNOTSUPP} where the filesystem or kernel does not do OFD locks).
     */
    public static int lockShared(int fd, long start, long length) {
        return set(fd, F_RDLCK, start, length);
    }

    /** Takes an exclusive (write) lock; returns 0 or {@code -errno}. */
    public static int lockExclusive(int fd, long start, long length) {
        return set(fd, F_WRLCK, start, length);
    }

    /** Drops this description's locks on the range; returns 0 or {@code -errno}. */
    public static int unlock(int fd, long start, long length) {
        return set(fd, F_UNLCK, start, length);
    }

    /**
     * Whether another open file description holds a lock on the range that would conflict with
     * an exclusive lock (that is: any lock at all): {@link #F_UNLCK} when none, else the type of
     * the conflicting lock ({@link #F_RDLCK} or {@link #F_WRLCK}), or {@code -errno}. Locks of
     * the description {@code fd} refers to never conflict with it.
     */
    public static int test(int fd, long start, long length) {
        UnsafeBuffer b = flock(F_WRLCK, start, length);
        long rc = Native.syscall(SYS_FCNTL, fd, F_OFD_GETLK, b.addressOffset(), 0, 0);
        return rc < 0 ? (int) rc : b.getShort(TYPE_OFFSET);
    }

    private static int set(int fd, short type, long start, long length) {
        UnsafeBuffer b = flock(type, start, length);
        return (int) Native.syscall(SYS_FCNTL, fd, F_OFD_SETLK, b.addressOffset(), 0, 0);
    }

    /** A fresh struct flock (set-up paths only: locks are taken at open, never per request). */
    private static UnsafeBuffer flock(short type, long start, long length) {
        if (start < 0 || length < 0) {
            throw new IllegalArgumentException("lock range must not be negative: start " + start + ", length " + length);
        }
        UnsafeBuffer b = new NativeBuffer(LENGTH, 8).buffer();
        b.putShort(TYPE_OFFSET, type);
        b.putShort(WHENCE_OFFSET, (short) Linux.SEEK_SET);
        b.putLong(START_OFFSET, start);
        b.putLong(LEN_OFFSET, length);
        b.putInt(PID_OFFSET, 0);
        return b;
    }
}
