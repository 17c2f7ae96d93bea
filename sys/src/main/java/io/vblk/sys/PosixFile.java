package io.vblk.sys;

import java.nio.file.Path;

/**
 * A file or block device opened with open(2), for the I/O back ends: raw descriptor, size, and
 * the synchronous calls (fallocate, fdatasync) that the back ends use off their batched paths.
 *
 * <p>After {@link #close()} nothing here touches the old descriptor number, which the kernel
 * hands to the next open (another disk): {@link #fd()} and {@link #sizeBytes()} throw
 * {@link IllegalStateException}, the calls that answer {@code -errno} answer {@code -EBADF}
 * without a syscall. A call racing close on another thread may still reach the number; the
 * owner closes only after the users of the file stopped (back ends take the number once, at
 * setup, and submit from their own registered state).
 */
public final class PosixFile implements AutoCloseable {
    private final Path path;
    /** The descriptor, -1 once closed (so a late call never reaches a reused number). */
    private volatile int fd;
    private final boolean readOnly;
    private final boolean direct;

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
     * The descriptor.
     *
     * @throws IllegalStateException once closed
     */
    public int fd() {
        int f = fd;
        if (f < 0) {
            throw closedException();
        }
        return f;
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
        int f = fd();
        return Native.check(Native.libc().lseek(f, 0, Linux.SEEK_END), "lseek", f, 0, "SEEK_END");
    }

    /** fallocate(2); returns 0 or {@code -errno} ({@code -EBADF} once closed). */
    public int fallocate(int mode, long offset, long length) {
        int f = fd;
        return f < 0 ? -Errno.EBADF : (int) Native.result(Native.libc().fallocate(f, mode, offset, length));
    }

    /** fdatasync(2); returns 0 or {@code -errno} ({@code -EBADF} once closed). */
    public int fdatasync() {
        int f = fd;
        return f < 0 ? -Errno.EBADF : (int) Native.result(Native.libc().fdatasync(f));
    }

    /** ftruncate(2); returns 0 or {@code -errno} ({@code -EBADF} once closed). */
    public int ftruncate(long length) {
        int f = fd;
        return f < 0 ? -Errno.EBADF : (int) Native.result(Native.libc().ftruncate(f, length));
    }

    /** pread(2) into native memory; returns bytes read or {@code -errno} ({@code -EBADF} once closed). */
    public long pread(long address, long length, long offset) {
        int f = fd;
        return f < 0 ? -Errno.EBADF : Native.result(Native.libc().pread(f, address, length, offset));
    }

    /** pwrite(2) from native memory; returns bytes written or {@code -errno} ({@code -EBADF} once closed). */
    public long pwrite(long address, long length, long offset) {
        int f = fd;
        return f < 0 ? -Errno.EBADF : Native.result(Native.libc().pwrite(f, address, length, offset));
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return fd < 0;
    }

    @Override
    public synchronized void close() {
        int f = fd;
        if (f >= 0) {
            fd = -1;
            Native.libc().close(f);
        }
    }

    @Override
    public String toString() {
        return "PosixFile[" + path + (fd < 0 ? ", closed" : ", fd " + fd) + (readOnly ? ", ro" : "") + (direct ? ", direct" : "") + "]";
    }
}
