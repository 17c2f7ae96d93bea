package io.vblk.sys;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.file.Path;

/**
 * A file or block device opened with open(2), for the I/O back ends: raw descriptor, size, and
 * the synchronous calls (fallocate, fdatasync, pread, pwrite, ftruncate) that the back ends use
 * off their batched paths.
 *
 * <p><b>Close against calls on other threads.</b> Each call holds a use of the descriptor for
 * the length of its system call: a use count and a closed flag share one int, changed by
 * compare-and-set (no lock, no allocation). A call that starts after {@link #close()} answers
 * {@code -EBADF} without a syscall; a close while calls are in flight marks the file closed at
 * once and leaves the close(2) to the last call to finish, so no call ever reaches a number the
 * kernel has handed to another file meanwhile (another disk's image, a socket). So {@code close}
 * returns before the descriptor is released when a call is in flight (a pread stuck on a hung
 * NFS server would otherwise hang the closer too); {@link #isClosed()} is true from the start.
 * {@link #fd()} hands the number out without a use: back ends that submit by number take it once,
 * at setup, and are closed before the file.
 *
 * <p>Locks taken on the descriptor (QEMU's image locks, {@link ImageLock}) belong to its open
 * file description and go when the descriptor does.
 */
public final class PosixFile implements AutoCloseable {
    /** state: bit 0 closed, bits 1.. the calls in flight. */
    private static final VarHandle STATE;
    private static final int CLOSED = 1;
    private static final int ONE_USE = 2;

    static {
        try {
            STATE = MethodHandles.lookup().findVarHandle(PosixFile.class, "state", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    /** Test seam: runs inside a use, just before the system call (null in production). */
    static volatile Runnable beforeCall;

    private final Path path;
    private final int fd;
    private final boolean readOnly;
    private final boolean direct;
    @SuppressWarnings("unused") // through STATE
    private volatile int state;

    private PosixFile(Path path, int fd, boolean readOnly, boolean direct) {
        this.path = path;
        this.fd = fd;
        this.readOnly = readOnly;
        this.direct = direct;
    }

    /**
     * Opens {@code path} read-only or read-write, with O_DIRECT if {@code direct}.
     *
     * @throws NativeException carrying errno and the path when open fails
     */
    public static PosixFile open(Path path, boolean readOnly, boolean direct) {
        int flags = (readOnly ? Linux.O_RDONLY : Linux.O_RDWR) | Linux.O_CLOEXEC | (direct ? Linux.O_DIRECT : 0);
        int fd = Native.libc().open(path.toString(), flags, 0);
        if (fd == -1) {
            throw new NativeException(Native.errno(), "open", path, "0" + Integer.toOctalString(flags), 0);
        }
        return new PosixFile(path, fd, readOnly, direct);
    }

    /**
     * Opens {@code path} as {@link #open} does, but only when it is a regular file or a block
     * device: the name is first opened with O_PATH, which opens nothing (no FIFO open that waits
     * for a writer, no device driver's open with its side effects: a watchdog armed, a tape
     * rewound), its kind read with fstat(2), and only then is that very inode opened for I/O,
     * through {@code /proc/self/fd/N} (so a name swapped in between is not followed). For image
     * files whose name an untrusted party chose (a qcow2 image's backing file).
     *
     * @throws IllegalArgumentException for a FIFO, socket, character device or directory
     * @throws NativeException carrying errno and the path when an open or fstat fails
     */
    public static PosixFile openFileOrBlockDevice(Path path, boolean readOnly, boolean direct) {
        int pathFlags = Linux.O_PATH | Linux.O_CLOEXEC;
        int pathFd = Native.libc().open(path.toString(), pathFlags, 0);
        if (pathFd == -1) {
            throw new NativeException(Native.errno(), "open", path, "0" + Integer.toOctalString(pathFlags), 0);
        }
        return reopenFileOrBlockDevice(pathFd, path, readOnly, direct);
    }

    /** Test seam: the system call number used for openat2 (a kernel without it answers ENOSYS). */
    static volatile long openat2Number = Linux.SYS_OPENAT2;

    /**
     * As {@link #openFileOrBlockDevice}, but {@code path} is resolved by the kernel in one step
     * beneath {@code dir} (openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): no
     * component may leave {@code dir}, whether by {@code ..}, an absolute symbolic link, a link
     * pointing above it or a /proc magic link, and that holds for the components as they are at
     * the open, not as a check before it saw them (a directory swapped for a link meanwhile is
     * refused, not followed). Links that stay beneath {@code dir} are followed. For backing
     * files confined to a directory whose name an untrusted image chose.
     *
     * @param dir the confining directory (the operator's; itself opened as named)
     * @param path a name under {@code dir}: relative to it, or absolute and starting with it
     * @throws IllegalArgumentException when {@code path} leaves {@code dir} (EXDEV, ELOOP), is
     *         not a regular file or block device, or the kernel lacks openat2 (Linux before 5.6,
     *         or a seccomp filter that refuses it: ENOSYS), each with its reason
     * @throws NativeException carrying errno and the path when an open or fstat fails otherwise
     */
    public static PosixFile openFileOrBlockDeviceBeneath(Path dir, Path path, boolean readOnly, boolean direct) {
        Path name = path;
        if (path.isAbsolute()) {
            if (!path.startsWith(dir)) {
                throw new IllegalArgumentException(path + " lies outside the directory " + dir);
            }
            name = dir.relativize(path);
        }
        if (name.toString().isEmpty()) {
            throw new IllegalArgumentException(path + " names the directory " + dir + " itself");
        }
        int dirFlags = Linux.O_PATH | Linux.O_DIRECTORY | Linux.O_CLOEXEC;
        int dirFd = Native.libc().open(dir.toString(), dirFlags, 0);
        if (dirFd == -1) {
            throw new NativeException(Native.errno(), "open", dir, "0" + Integer.toOctalString(dirFlags), 0);
        }
        int pathFd;
        try {
            byte[] bytes = name.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8);
            NativeBuffer cName = new NativeBuffer(bytes.length + 1);
            cName.buffer().putBytes(0, bytes);
            cName.buffer().putByte(bytes.length, (byte) 0);
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            NativeBuffer how = new NativeBuffer(OPEN_HOW_SIZE, 8);
            how.buffer().putLong(0, Linux.O_PATH | Linux.O_CLOEXEC);
            how.buffer().putLong(8, 0);
            how.buffer().putLong(16, Linux.RESOLVE_BENEATH | Linux.RESOLVE_NO_MAGICLINKS);
            long rc;
            int tries = 0;
            do {
                // EAGAIN: a rename or mount raced the lookup of ".." under RESOLVE_BENEATH; the
                // kernel asks for a retry.
                rc = Native.syscall(openat2Number, dirFd, cName.address(), how.address(), OPEN_HOW_SIZE, 0);
            } while ((rc == -Errno.EAGAIN || rc == -Errno.EINTR) && ++tries < 100);
            // Only the addresses reached the kernel: the buffers (freed with their owners by the
            // collector) must stay reachable until the call returned.
            java.lang.ref.Reference.reachabilityFence(cName);
            java.lang.ref.Reference.reachabilityFence(how);
            if (rc == -Errno.ENOSYS) {
                throw new IllegalArgumentException("cannot confine " + path + " to " + dir + ": this kernel has no"
                        + " openat2(2) (Linux 5.6 or later, not refused by a seccomp filter, is needed for a"
                        + " backing directory)");
            }
            if (rc == -Errno.EXDEV || rc == -Errno.ELOOP) {
                // ELOOP also stands for too many levels of links (40), hence both in the message.
                throw new IllegalArgumentException(path + " lies outside the directory " + dir + " or has too many"
                        + " levels of links (openat2 RESOLVE_BENEATH: " + Errno.describe((int) -rc) + ")");
            }
            if (rc < 0) {
                throw new NativeException((int) -rc, "openat2", dir, name, "RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS");
            }
            pathFd = (int) rc;
        } finally {
            Native.libc().close(dirFd);
        }
        return reopenFileOrBlockDevice(pathFd, path, readOnly, direct);
    }

    private static final int OPEN_HOW_SIZE = 24;

    /** Checks what the O_PATH descriptor {@code pathFd} refers to and opens that inode for I/O; closes {@code pathFd}. */
    private static PosixFile reopenFileOrBlockDevice(int pathFd, Path path, boolean readOnly, boolean direct) {
        try {
            int mode = FileSize.mode(pathFd);
            if (mode < 0) {
                throw new NativeException(-mode, "fstat", pathFd);
            }
            int type = mode & 0170000;
            if (type != 0100000 && type != 0060000) {
                throw new IllegalArgumentException(path + " is not a regular file or a block device (a FIFO, socket,"
                        + " character device or directory is refused)");
            }
            int flags = (readOnly ? Linux.O_RDONLY : Linux.O_RDWR) | Linux.O_CLOEXEC | (direct ? Linux.O_DIRECT : 0);
            String self = "/proc/self/fd/" + pathFd;
            int fd = Native.libc().open(self, flags, 0);
            if (fd == -1) {
                throw new NativeException(Native.errno(), "open", path + " (" + self + ")", "0" + Integer.toOctalString(flags), 0);
            }
            return new PosixFile(path, fd, readOnly, direct);
        } finally {
            Native.libc().close(pathFd);
        }
    }

    /**
     * The descriptor.
     *
     * @throws IllegalStateException once closed
     */
    public int fd() {
        if (((int) STATE.getVolatile(this) & CLOSED) != 0) {
            throw closedException();
        }
        return fd;
    }

    /** Takes a use unless closed; true when taken (then {@link #release()} must follow). */
    private boolean acquire() {
        while (true) {
            int s = (int) STATE.getVolatile(this);
            if ((s & CLOSED) != 0) {
                return false;
            }
            if (STATE.compareAndSet(this, s, s + ONE_USE)) {
                Runnable hook = beforeCall;
                if (hook != null) {
                    hook.run();
                }
                return true;
            }
        }
    }

    /** Gives a use back; the last use after a close releases the descriptor. */
    private void release() {
        int s = (int) STATE.getAndAdd(this, -ONE_USE) - ONE_USE;
        if (s == CLOSED) {
            Native.libc().close(fd);
        }
    }

    private IllegalStateException closedException() {
        return new IllegalStateException("closed: " + path);
    }

    /** The path it was opened from. */
    public Path path() {
        return path;
    }

    /** Whether it was opened read-only. */
    public boolean readOnly() {
        return readOnly;
    }

    /** Whether it was opened with O_DIRECT. */
    public boolean direct() {
        return direct;
    }

    /** The size in bytes: of the file, or of the block device (lseek to the end works for both). */
    public long sizeBytes() {
        if (!acquire()) {
            throw closedException();
        }
        try {
            return Native.check(Native.libc().lseek(fd, 0, Linux.SEEK_END), "lseek", fd, 0, "SEEK_END");
        } finally {
            release();
        }
    }

    /** fallocate(2); returns 0 or {@code -errno} ({@code -EBADF} once closed). */
    public int fallocate(int mode, long offset, long length) {
        if (!acquire()) {
            return -Errno.EBADF;
        }
        try {
            return (int) Native.result(Native.libc().fallocate(fd, mode, offset, length));
        } finally {
            release();
        }
    }

    /** fdatasync(2); returns 0 or {@code -errno} ({@code -EBADF} once closed). */
    public int fdatasync() {
        if (!acquire()) {
            return -Errno.EBADF;
        }
        try {
            return (int) Native.result(Native.libc().fdatasync(fd));
        } finally {
            release();
        }
    }

    /** ftruncate(2); returns 0 or {@code -errno} ({@code -EBADF} once closed). */
    public int ftruncate(long length) {
        if (!acquire()) {
            return -Errno.EBADF;
        }
        try {
            return (int) Native.result(Native.libc().ftruncate(fd, length));
        } finally {
            release();
        }
    }

    /** pread(2) into native memory; returns bytes read or {@code -errno} ({@code -EBADF} once closed). */
    public long pread(long address, long length, long offset) {
        if (!acquire()) {
            return -Errno.EBADF;
        }
        try {
            return Native.result(Native.libc().pread(fd, address, length, offset));
        } finally {
            release();
        }
    }

    /** pwrite(2) from native memory; returns bytes written or {@code -errno} ({@code -EBADF} once closed). */
    public long pwrite(long address, long length, long offset) {
        if (!acquire()) {
            return -Errno.EBADF;
        }
        try {
            return Native.result(Native.libc().pwrite(fd, address, length, offset));
        } finally {
            release();
        }
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return ((int) STATE.getVolatile(this) & CLOSED) != 0;
    }

    /**
     * Marks the file closed and closes the descriptor, at once when no call is in flight, else
     * when the last of them returns. Idempotent.
     */
    @Override
    public void close() {
        int s = (int) STATE.getAndBitwiseOr(this, CLOSED);
        if ((s & CLOSED) == 0 && s == 0) {
            Native.libc().close(fd);
        }
    }

    @Override
    public String toString() {
        return "PosixFile[" + path + (isClosed() ? ", closed" : ", fd " + fd) + (readOnly ? ", ro" : "") + (direct ? ", direct" : "") + "]";
    }
}
