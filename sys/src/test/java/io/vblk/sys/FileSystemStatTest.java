package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.junit.jupiter.api.Test;

/**
 * The one fstatfs of sys ({@link FileSystemStat}), which Mapping's page size, FileSize's full
 * file system check and vhost's memory file system check read: the fields land where struct
 * statfs has them, and a failure carries its errno.
 */
class FileSystemStatTest {
    private static final long TMPFS_MAGIC = 0x01021994L;

    @Test
    void aMemfdLivesOnTmpfsWithoutASizeLimit() {
        int fd = Native.libc().memfd_create("vblk-test-statfs", Linux.MFD_CLOEXEC);
        assertTrue(fd >= 0);
        try {
            FileSystemStat fs = FileSystemStat.of(fd);
            assertEquals(TMPFS_MAGIC, fs.type());
            assertFalse(fs.hugetlbfs());
            assertEquals(Linux.PAGE_SIZE, fs.blockSize());
            assertEquals(0, fs.blocks(), "a memfd's internal tmpfs reports no limit");
            assertEquals(Linux.PAGE_SIZE, Mapping.pageSizeOf(fd));
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aHugetlbMemfdReportsItsHugePageSize() {
        int fd = Native.libc().memfd_create("vblk-test-statfs-huge", Linux.MFD_CLOEXEC | Linux.MFD_HUGETLB);
        assumeTrue(fd >= 0, "no hugetlbfs memfd here (errno " + Native.errno() + ")");
        try {
            FileSystemStat fs = FileSystemStat.of(fd);
            assertTrue(fs.hugetlbfs());
            assertTrue(fs.blockSize() > Linux.PAGE_SIZE, "the huge page size: " + fs.blockSize());
            assertEquals(fs.blockSize(), Mapping.pageSizeOf(fd));
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aBadDescriptorFailsWithItsErrno() {
        NativeException e = assertThrows(NativeException.class, () -> FileSystemStat.of(-1));
        assertEquals(Errno.EBADF, e.errno());
        assertEquals(Linux.PAGE_SIZE, Mapping.pageSizeOf(-1), "callers keep their fallbacks");
        assertFalse(FileSize.sparseOnFullFileSystem(-1));
    }
}
