package io.vblk.vhost;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.FileSystemStat;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;

/**
 * Checks on descriptors a frontend sends, made before vblk relies on them: an eventfd must be an
 * eventfd (the data plane reads 8 bytes from it whenever epoll says it is readable; a pipe there
 * could block an I/O thread), and a memory region must lie inside its file (touching a mapping
 * past the end of a file raises SIGBUS, which would take the whole process down).
 *
 * <p>Nothing here changes a received descriptor: it shares its open file description with the
 * frontend (facts.md).
 *
 * <pre>
 * struct stat (x86-64, 144 bytes), the fields read here:
 *   st_dev u64 @0, st_ino u64 @8, st_mode u32 @24, st_size i64 @48
 * </pre>
 */
final class Descriptors {
    private static final long SYS_FSTAT = 5;
    private static final int STAT_LENGTH = 144;
    private static final int STAT_DEV_OFFSET = 0;
    private static final int STAT_INO_OFFSET = 8;
    private static final int STAT_MODE_OFFSET = 24;
    private static final int STAT_SIZE_OFFSET = 48;
    private static final int S_IFMT = 0170000;
    private static final int S_IFREG = 0100000;
    /** shmem: tmpfs files, /dev/shm, and every non-hugetlb memfd. */
    static final long TMPFS_MAGIC = 0x01021994L;
    /** hugetlbfs: /dev/hugepages files and hugetlb memfds. */
    static final long HUGETLBFS_MAGIC = Linux.HUGETLBFS_MAGIC;

    private Descriptors() {
    }

    /** Whether {@code fd} is an eventfd (its /proc link reads {@code anon_inode:[eventfd]}). */
    static boolean isEventFd(int fd) {
        try {
            return Files.readSymbolicLink(Path.of("/proc/self/fd/" + fd)).toString().equals("anon_inode:[eventfd]");
        } catch (IOException | UnsupportedOperationException e) {
            return false;
        }
    }

    /** A regular file (or memfd) a descriptor refers to: which one (device and inode) and its size. */
    record RegularFile(long device, long inode, long sizeBytes) {
        /** Whether {@code other} is the same file (whatever the descriptors or sizes). */
        boolean sameFile(RegularFile other) {
            return other != null && device == other.device && inode == other.inode;
        }
    }

    /**
     * The size of the regular file (or memfd) {@code fd} refers to.
     *
     * @throws ProtocolError (rejected) when it is not a regular file or fstat fails
     */
    static long regularFileSize(int fd) {
        return regularFile(fd).sizeBytes();
    }

    /**
     * The regular file (or memfd) {@code fd} refers to.
     *
     * @throws ProtocolError (rejected) when it is not a regular file or fstat fails
     */
    static RegularFile regularFile(int fd) {
        UnsafeBuffer stat = new NativeBuffer(STAT_LENGTH).buffer();
        long rc = Native.syscall(SYS_FSTAT, fd, stat.addressOffset(), 0, 0, 0);
        if (rc < 0) {
            throw ProtocolError.rejected("fstat of descriptor failed: errno " + -rc + " (" + Errno.describe((int) -rc) + ")");
        }
        int mode = stat.getInt(STAT_MODE_OFFSET);
        if ((mode & S_IFMT) != S_IFREG) {
            throw ProtocolError.rejected(String.format("memory descriptor is not a regular file or memfd (mode 0%o)", mode));
        }
        return new RegularFile(stat.getLong(STAT_DEV_OFFSET), stat.getLong(STAT_INO_OFFSET),
                stat.getLong(STAT_SIZE_OFFSET));
    }

    /**
     * The file system type (statfs {@code f_type}, a magic number) of the file {@code fd} refers to.
     *
     * @throws ProtocolError (rejected) when fstatfs fails
     */
    static long fileSystemType(int fd) {
        try {
            return FileSystemStat.of(fd).type();
        } catch (NativeException e) {
            throw ProtocolError.rejected("fstatfs of descriptor failed: errno " + e.errno() + " (" + Errno.describe(e.errno()) + ")");
        }
    }

    /**
     * Whether a page fault on a file of this type is served from memory and ends: shmem (memfd,
     * tmpfs) and hugetlbfs. A fault on any other file system may wait on I/O, and on FUSE, NFS or
     * 9p for a server that never answers; a thread blocked in such a fault inside Java code never
     * reaches a safepoint, and the next safepoint then stops every thread of the JVM.
     */
    static boolean isMemoryFileSystem(long type) {
        return type == TMPFS_MAGIC || type == HUGETLBFS_MAGIC;
    }

    /** Closes a descriptor we own, ignoring errors (there is nothing to do about them). */
    static void close(int fd) {
        if (fd >= 0) {
            Native.libc().close(fd);
        }
    }
}
