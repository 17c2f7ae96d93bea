package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.List;

import org.junit.jupiter.api.Test;

import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Native;

/**
 * rev15b: hugetlbfs descriptors from a hostile frontend.
 *
 * <p>A memory region that is not a whole number of huge pages: mmap(2) maps whole huge pages,
 * munmap(2) of anything else fails with EINVAL, so such a table was never unmapped (its VMA and
 * the frontend's file stayed for the JVM's life while its bytes went back to the budget; some
 * 8,200 SET_MEM_TABLEs reached vm.max_map_count and the JVM aborted). It is refused now.
 *
 * <p>A hugetlbfs dirty log: marks are compare-and-set on the mapping, and a hugetlbfs page the
 * frontend punched out with an empty pool makes that CAS fault (SIGBUS) where HotSpot's
 * interpreted Unsafe CAS has no guard: the JVM would die. Only a shmem memfd is taken (QEMU's
 * log is one).
 *
 * <p>This VM has no huge page pool (HugePages_Total 0): nothing here maps or touches a page;
 * the checks run before any mapping.
 */
class HugetlbMemoryAttackTest {
    private static final int F_ADD_SEALS = 1033;
    private static final int F_SEAL_SHRINK = 0x2;

    private static int hugetlbMemfd(int extraFlags) {
        int fd = Native.libc().memfd_create("vblk-test-hugetlb", Linux.MFD_CLOEXEC | Linux.MFD_HUGETLB | extraFlags);
        assumeTrue(fd >= 0, "no hugetlbfs memfd here (errno " + Native.errno() + ")");
        return fd;
    }

    @Test
    void aRegionThatIsNotWholeHugePagesIsRefused() {
        int fd = hugetlbMemfd(0);
        try {
            long huge = Mapping.pageSizeOf(fd);
            assertEquals(0, Native.libc().ftruncate(fd, 2 * huge));
            long before = MemoryTable.mappedBytes();
            for (MemoryTable.Region r : List.of(
                    new MemoryTable.Region(0, 4096, 0, 0, fd), // smaller than a huge page
                    new MemoryTable.Region(0, huge + 4096, 0, 0, fd), // not a multiple
                    new MemoryTable.Region(0, huge, 0, 4096, fd))) { // offset inside a huge page
                ProtocolError refused = assertThrows(ProtocolError.class, () -> MemoryTable.map(List.of(r)), r.toString());
                assertTrue(refused.getMessage().contains("hugetlbfs, whose pages are " + huge + " bytes"),
                        refused.getMessage());
            }
            assertEquals(before, MemoryTable.mappedBytes(), "nothing reserved");
        } finally {
            Native.libc().close(fd);
        }
    }

    /** The huge page rule is hugetlbfs's only: a shmem region keeps any size and offset. */
    @Test
    void aShmemRegionOfAnySizeAndOffsetStillMaps() {
        int fd = io.vblk.sys.Memfd.create("vblk-test-shmem", 1L << 20);
        try {
            List<MemoryTable.Region> regions = List.of(new MemoryTable.Region(0, 10_000, 0, 100, fd));
            io.vblk.hostmem.GuestMemory m = MemoryTable.map(regions);
            m.close();
            MemoryTable.release(MemoryTable.bytes(regions));
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aHugetlbDirtyLogIsRefused() {
        int fd = hugetlbMemfd(Linux.MFD_ALLOW_SEALING);
        try {
            long huge = Mapping.pageSizeOf(fd);
            assertEquals(0, Native.libc().ftruncate(fd, huge));
            assertEquals(0, Native.libc().fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), "sealed as QEMU seals its log");
            ProtocolError refused = assertThrows(ProtocolError.class, () -> LogArea.check(fd, 4096, 0));
            assertTrue(refused.getMessage().contains("hugetlbfs"), refused.getMessage());
        } finally {
            Native.libc().close(fd);
        }
    }

    /**
     * The same for an inflight buffer (sealed against shrinking, which does not stop a hole).
     * Before, its guarded mapping failed only because MAP_FIXED at a 4 KiB-aligned address is
     * refused for hugetlbfs, unless the reservation happened to fall on a huge page boundary.
     */
    @Test
    void aHugetlbInflightBufferIsRefused() {
        int fd = hugetlbMemfd(Linux.MFD_ALLOW_SEALING);
        try {
            long huge = Mapping.pageSizeOf(fd);
            assertEquals(0, Native.libc().ftruncate(fd, huge));
            assertEquals(0, Native.libc().fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK));
            long bytes = InflightDescriptor.bufferBytes(1, 64);
            ProtocolError refused = assertThrows(ProtocolError.class, () -> InflightBuffer.map(fd, bytes, 0, 1, 64, null));
            assertTrue(refused.getMessage().contains("hugetlbfs"), refused.getMessage());
        } finally {
            Native.libc().close(fd);
        }
    }
}
