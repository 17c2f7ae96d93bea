package io.vblk.sys;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * What fstatfs(2) reports of the file system a descriptor's file lives on: the fields vblk reads
 * of {@code struct statfs} (x86-64 layout, 120 bytes). The one place that calls fstatfs: the
 * hugetlbfs page size of a mapping, the full-file-system check of fault evidence, the memory
 * file system check of a vhost-user memory region. Allocates its buffer; off the data path.
 *
 * @param type f_type, the file system's magic number (e.g. {@link Linux#HUGETLBFS_MAGIC})
 * @param blockSize f_bsize: the huge page size on hugetlbfs
 * @param blocks f_blocks: 0 for a file system that reports no size limit (a memfd's tmpfs)
 * @param blocksAvailable f_bavail: blocks free to an unprivileged writer
 */
public record FileSystemStat(long type, long blockSize, long blocks, long blocksAvailable) {
    private static final int STATFS_LENGTH = 120;
    private static final int TYPE_OFFSET = 0;
    private static final int BSIZE_OFFSET = 8;
    private static final int BLOCKS_OFFSET = 16;
    private static final int BAVAIL_OFFSET = 32;

    /**
     * fstatfs of {@code fd}.
     *
     * @throws NativeException carrying the errno when fstatfs fails (EBADF, ...)
     */
    public static FileSystemStat of(int fd) {
        UnsafeBuffer statfs = new NativeBuffer(STATFS_LENGTH, 8).buffer();
        long rc = Native.syscall(Linux.SYS_FSTATFS, fd, statfs.addressOffset(), 0, 0, 0);
        if (rc < 0) {
            throw new NativeException((int) -rc, "fstatfs", fd);
        }
        return new FileSystemStat(statfs.getLong(TYPE_OFFSET), statfs.getLong(BSIZE_OFFSET),
                statfs.getLong(BLOCKS_OFFSET), statfs.getLong(BAVAIL_OFFSET));
    }

    /** Whether it is hugetlbfs (/dev/hugepages files, hugetlb memfds). */
    public boolean hugetlbfs() {
        return type == Linux.HUGETLBFS_MAGIC;
    }
}
