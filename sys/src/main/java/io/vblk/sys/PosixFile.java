package io.vblk.sys;

import java.nio.file.Path;

/**
 * A file or block device opened with open(2), for the I/O back ends: raw descriptor, size, and
 * the synchronous calls (fallocate, fdatasync) that the back ends use off their batched paths.
 */
public final class PosixFile implements AutoCloseable {
    private final Path path;
    private final int fd;
    private final boolean readOnly;
    private final boolean direct;
    private volatile boolean closed;

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

    /** The descriptor. */
    public int fd() {
        return fd;
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
        return Native.check(Native.libc().lseek(fd, 0, Linux.SEEK_END), "lseek", fd, 0, "SEEK_END");
    }

    /** fallocate(2); returns 0 or {@code -errno}. */
    public int fallocate(int mode, long offset, long length) {
        return (int) Native.result(Native.libc().fallocate(fd, mode, offset, length));
    }

    /** fdatasync(2); returns 0 or {@code -errno}. */
    public int fdatasync() {
        return (int) Native.result(Native.libc().fdatasync(fd));
    }

    /** pread(2) into native memory; returns bytes read or {@code -errno}. */
    public long pread(long address, long length, long offset) {
        return Native.result(Native.libc().pread(fd, address, length, offset));
    }

    /** pwrite(2) from native memory; returns bytes written or {@code -errno}. */
    public long pwrite(long address, long length, long offset) {
        return Native.result(Native.libc().pwrite(fd, address, length, offset));
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return closed;
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            Native.libc().close(fd);
        }
    }

    @Override
    public String toString() {
        return "PosixFile[" + path + ", fd " + fd + (readOnly ? ", ro" : "") + (direct ? ", direct" : "") + "]";
    }
}
