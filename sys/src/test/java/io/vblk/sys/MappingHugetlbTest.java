package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;

/**
 * rev15b: a hugetlbfs mapping shorter than a huge page (a region a frontend announces as 4 KiB).
 * mmap(2) maps a whole huge page; munmap(2) of the 4 KiB-rounded length fails with EINVAL, so
 * {@link Mapping#close()} used to leave the VMA (and the file) for the JVM's life. It now rounds
 * to the file's huge page size ({@link Mapping#pageSizeOf}) and the mapping goes.
 *
 * <p>MAP_NORESERVE, since the test VM has no huge page pool (HugePages_Total 0): the mapping is
 * made without reserving a page, and nothing here touches it.
 */
class MappingHugetlbTest {
    @Test
    void aHugetlbMappingShorterThanAHugePageIsUnmapped() throws IOException {
        int fd = Native.libc().memfd_create("vblk-test-hugetlb", Linux.MFD_CLOEXEC | Linux.MFD_HUGETLB);
        assumeTrue(fd >= 0, "no hugetlbfs memfd here (errno " + Native.errno() + ")");
        try {
            long huge = Mapping.pageSizeOf(fd);
            assertTrue(huge > Linux.PAGE_SIZE, "hugetlbfs reports its huge page size: " + huge);
            assertEquals(0, Native.libc().ftruncate(fd, huge));
            Mapping m = Mapping.mapInto(fd, 0, 4096, Linux.PROT_READ | Linux.PROT_WRITE,
                    Linux.MAP_SHARED | Linux.MAP_NORESERVE, false);
            long addr = m.address();
            assertTrue(mapped(addr), "mapped");
            m.close();
            assertFalse(m.unmapFailed(), "munmap succeeded (errno " + m.unmapErrno() + ")");
            assertFalse(mapped(addr), "the huge page mapping is gone from /proc/self/maps");
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aMemfdMapsInSmallPages() {
        int fd = Memfd.create("vblk-test-shmem", 8192);
        try {
            assertEquals(Linux.PAGE_SIZE, Mapping.pageSizeOf(fd));
        } finally {
            Native.libc().close(fd);
        }
    }

    private static boolean mapped(long addr) throws IOException {
        return Files.readAllLines(Path.of("/proc/self/maps")).stream()
                .anyMatch(l -> l.startsWith(Long.toHexString(addr) + "-"));
    }
}
