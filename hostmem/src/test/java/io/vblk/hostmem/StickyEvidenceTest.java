package io.vblk.hostmem;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Memfd;
import io.vblk.sys.Native;

/**
 * rev16c F1: evidence a frontend cannot take back. A late guest-memory fault is caught after
 * the frontend could grow its file back: the change since the table was mapped stays evidence
 * (sys FileChangeWatch), while the guest's own stores through the mapping do not count, nor
 * does a hole punched in shmem (it reads as zeros: nothing to fault). A file with holes nothing
 * can fill is evidence too, though its size never changed: on a size-limited file system that is
 * full (a frontend filled /dev/shm), or on hugetlbfs with no free huge page. A table mapped after
 * the change starts clean.
 */
class StickyEvidenceTest {
    private static final long MIB = 1L << 20;
    private static final long SYS_FALLOCATE = 285;
    private static final int FALLOC_FL_KEEP_SIZE = 0x01;
    private static final int FALLOC_FL_PUNCH_HOLE = 0x02;

    @TempDir
    Path dir;

    @Test
    void aFileShrunkAndGrownBackStaysEvidenceAndGuestStoresDoNot() {
        int fd = Memfd.create("sticky", 4 * MIB);
        try (GuestMemory m = GuestMemory.builder().addRegion(0, 4 * MIB, fd, 0, 0, false).build()) {
            long host = m.region(0).hostAddress();
            for (long off = 0; off < 4 * MIB; off += 4096) {
                UnsafeApi.putLong(host + off, off); // the guest writes its memory
            }
            assertNull(m.shrinkEvidence(), "the guest's own stores are no evidence");
            assertEquals(0, Native.libc().ftruncate(fd, MIB));
            assertEquals(0, Native.libc().ftruncate(fd, 4 * MIB));
            String evidence = m.shrinkEvidence();
            assertNotNull(evidence, "shrunk and grown back before the fault was caught");
            assertTrue(evidence.contains("since it was mapped"), evidence);
            try (GuestMemory next = GuestMemory.builder().addRegion(0, 4 * MIB, fd, 0, 0, false).build()) {
                assertNull(next.shrinkEvidence(), "a table mapped after the change starts clean");
                assertNotNull(m.shrinkEvidence(), "the older table keeps it");
                // A shmem hole reads as zeros: nothing to fault, no evidence against anyone.
                assertEquals(0, Native.syscall(SYS_FALLOCATE, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MIB, MIB, 0));
                assertNull(next.shrinkEvidence());
            }
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aSparseFileOnAFullFileSystemIsEvidence() throws Exception {
        Path mnt = Files.createDirectories(dir.resolve("small-tmpfs"));
        assumeTrue(exec("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt.toString()) == 0,
                "needs root and mount permission");
        try {
            Path ram = mnt.resolve("ram");
            try (var f = new java.io.RandomAccessFile(ram.toFile(), "rw")) {
                f.setLength(4 * MIB); // sparse: 4 MiB on a 1 MiB file system
            }
            try (GuestMemory m = GuestMemory.builder().addFile(0, 4 * MIB, ram, 0, false).build()) {
                assertNull(m.shrinkEvidence(), "room left: a hole can still be filled");
                Files.write(mnt.resolve("filler"), new byte[(int) MIB - 4096]);
                try {
                    Files.write(mnt.resolve("filler2"), new byte[(int) MIB]);
                } catch (IOException full) {
                    // ENOSPC: the file system is full, as wanted
                }
                String evidence = m.shrinkEvidence();
                assertNotNull(evidence, "holes on a full file system");
                assertTrue(evidence.contains("no room left"), evidence);
            }
        } finally {
            exec("umount", "-l", mnt.toString());
        }
    }

    @Test
    void hugetlbfsHolesWithAnEmptyPoolAreEvidence() {
        int fd = Native.libc().memfd_create("holes", io.vblk.sys.Linux.MFD_CLOEXEC | io.vblk.sys.Linux.MFD_HUGETLB);
        assumeTrue(fd >= 0, "no hugetlbfs memfd here");
        try {
            long page = io.vblk.sys.Mapping.pageSizeOf(fd);
            assertEquals(0, Native.libc().ftruncate(fd, 4 * page)); // holes: no page taken
            boolean poolEmpty = hugePagesFree(page) <= 0;
            assertEquals(poolEmpty, io.vblk.sys.FileSize.sparseOnFullFileSystem(fd),
                    "holes on hugetlbfs count exactly when no free huge page can fill them");
        } finally {
            Native.libc().close(fd);
        }
    }

    private static long hugePagesFree(long page) {
        Path pool = Path.of("/sys/kernel/mm/hugepages/hugepages-" + (page >> 10) + "kB");
        try {
            return Long.parseLong(Files.readString(pool.resolve("free_hugepages")).trim())
                    - Long.parseLong(Files.readString(pool.resolve("resv_hugepages")).trim());
        } catch (IOException e) {
            return 1;
        }
    }

    private static int exec(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        return p.waitFor();
    }
}
