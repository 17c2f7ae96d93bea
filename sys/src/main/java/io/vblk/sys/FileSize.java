package io.vblk.sys;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * The size of the file behind a descriptor, read with fstat(2): unlike {@code lseek(SEEK_END)}
 * it moves no file offset, so it may be asked of a descriptor whose open file description a
 * frontend shares. Off the data path (a guest-memory fault's evidence, see hostmem GuestMemory).
 */
public final class FileSize {
    /** {@code struct stat} on x86-64: 144 bytes, {@code st_size} at 48. */
    private static final int STAT_LENGTH = 144;
    private static final int STAT_SIZE_OFFSET = 48;
    private static final int STAT_MODE_OFFSET = 24;
    private static final int S_IFMT = 0170000;
    private static final int S_IFREG = 0100000;

    private FileSize() {
    }

    /** The size in bytes of what {@code fd} refers to, or {@code -errno}. Allocates its buffer. */
    public static long of(int fd) {
        UnsafeBuffer stat = new NativeBuffer(STAT_LENGTH, 8).buffer();
        long rc = Native.syscall(Linux.SYS_FSTAT, fd, stat.addressOffset(), 0, 0, 0);
        return rc < 0 ? rc : stat.getLong(STAT_SIZE_OFFSET);
    }

    /**
     * The size of the regular file behind {@code fd} (memfd, tmpfs, hugetlbfs and disk files
     * are regular), {@code -ENODEV} for anything else (a character or block device such as
     * /dev/zero, whose st_size is 0 whatever it maps), or {@code -errno}. Allocates its buffer.
     */
    public static long ofRegularFile(int fd) {
        UnsafeBuffer stat = new NativeBuffer(STAT_LENGTH, 8).buffer();
        long rc = Native.syscall(Linux.SYS_FSTAT, fd, stat.addressOffset(), 0, 0, 0);
        if (rc < 0) {
            return rc;
        }
        return (stat.getInt(STAT_MODE_OFFSET) & S_IFMT) == S_IFREG ? stat.getLong(STAT_SIZE_OFFSET) : -Errno.ENODEV;
    }

    /** The {@code st_mode} (type and permission bits) of what {@code fd} refers to, or {@code -errno}. Allocates. */
    public static int mode(int fd) {
        UnsafeBuffer stat = new NativeBuffer(STAT_LENGTH, 8).buffer();
        long rc = Native.syscall(Linux.SYS_FSTAT, fd, stat.addressOffset(), 0, 0, 0);
        return rc < 0 ? (int) rc : stat.getInt(STAT_MODE_OFFSET);
    }

    /** A close-on-exec duplicate of {@code fd} (same open file description), or {@code -errno}. */
    public static int duplicate(int fd) {
        int dup = Native.libc().fcntl(fd, Linux.F_DUPFD_CLOEXEC, 0);
        return dup >= 0 ? dup : -Native.errno();
    }
}
