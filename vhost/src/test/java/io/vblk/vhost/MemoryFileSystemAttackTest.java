package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;

import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Memory regions must be shared memory or hugetlbfs (review 10a): a frontend that sent a file on
 * a FUSE file system it serves itself got it mapped, and the first touch of an uncached page (an
 * I/O thread reading {@code used.idx} at ring start) waited in the kernel for an answer that
 * never came, inside Java code: the next safepoint (any GC) then froze every thread of the JVM,
 * every export included. A file on a disk file system stands in for FUSE here (the same check
 * refuses both; the FUSE freeze itself needs a FUSE server and a minute: the review's test).
 */
class MemoryFileSystemAttackTest extends OneServerCase {
    private static final long SIZE = 4L << 20;

    @Test
    void aRegionOnAFileSystemThatIsNotMemoryIsRefusedAndTheServerGoesOn() throws IOException {
        int fd = diskFile();
        try {
            VhostUserFrontend f = newSession();
            f.setProtocolFeatures(BadFrontendTest.ALL_PROTOCOL);
            f.setOwner();
            VhostUserFrontend.Region r = new VhostUserFrontend.Region(0, SIZE, 0x7f00_0000_0000L, 0);
            assertTrue(f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(r), fd) > 0,
                    "a region in a file on a disk file system is mapped");
            assertTrue(f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), fd) > 0,
                    "an added region in a file on a disk file system is mapped");
            complained("not shared memory");
            f.close();
            rig.awaitGone(sessions);
            VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void theOperatorCanAllowAnyFileSystem() throws IOException {
        int fd = diskFile();
        System.setProperty(VhostUserServer.GUEST_MEMORY_ANY_FILE_SYSTEM, "true");
        try {
            VhostUserFrontend f = newSession();
            f.setProtocolFeatures(BadFrontendTest.ALL_PROTOCOL);
            f.setOwner();
            VhostUserFrontend.Region r = new VhostUserFrontend.Region(0, SIZE, 0x7f00_0000_0000L, 0);
            assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(r), fd));
            f.close();
        } finally {
            System.clearProperty(VhostUserServer.GUEST_MEMORY_ANY_FILE_SYSTEM);
            Native.libc().close(fd);
        }
    }

    @Test
    void memfdsAndTmpfsAreMemory() {
        assertTrue(Descriptors.isMemoryFileSystem(Descriptors.fileSystemType(guest.fd)), "a memfd");
    }

    /** A file of SIZE bytes on the build directory's (disk) file system, open read-write. */
    private static int diskFile() throws IOException {
        Path target = Path.of("target").toAbsolutePath();
        Files.createDirectories(target);
        Path file = Files.createTempFile(target, "guest-ram", ".img");
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(SIZE);
        }
        int fd = Native.libc().open(file.toString(), Linux.O_RDWR | Linux.O_CLOEXEC, 0);
        Files.delete(file);
        assertTrue(fd >= 0, "open " + file);
        long type = Descriptors.fileSystemType(fd);
        if (Descriptors.isMemoryFileSystem(type)) {
            Native.libc().close(fd);
        }
        assumeFalse(Descriptors.isMemoryFileSystem(type), "the build directory is on tmpfs: no disk file system here");
        return fd;
    }
}
