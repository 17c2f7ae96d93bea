package io.vblk.hostmem;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;

import io.vblk.sys.FileSize;
import io.vblk.sys.Linux;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;

/**
 * A frontend against {@link GuestMemory#shrinkEvidence()}, the evidence engine GuestFaults
 * attributes a late guest-memory fault by. Evidence decides whose queues are quarantined and
 * whether the queue where a fault landed is spared, so false evidence is an attack: a table
 * that "shows evidence" for ever turns every later fault on its I/O thread into an attributed
 * one. Also: the table's duplicated descriptors leak nothing, and the caller's descriptor
 * closed and reused does not redirect the evidence.
 */
class ShrinkEvidenceAttackTest {
    private static final long MIB = 1L << 20;

    /**
     * Finding: a region mapping a character device (here /dev/zero, which mmap accepts as shared
     * memory) reported a file of 0 bytes, i.e. evidence, for ever, although nothing of it can
     * ever be cut off. Only regular files (memfd, tmpfs, hugetlbfs, disk files) can shrink.
     */
    @Test
    void aRegionMappingADeviceFileShowsNoEvidence() {
        int fd = Native.libc().open("/dev/zero", Linux.O_RDWR, 0);
        assertTrue(fd >= 0, "open /dev/zero");
        try (GuestMemory m = GuestMemory.builder().addRegion(0, 2 * MIB, fd, 0, 0, false).build()) {
            assertNull(m.shrinkEvidence(), "a device file cannot shrink: no evidence");
        } finally {
            Native.libc().close(fd);
        }
    }

    /** Holds: the evidence follows the file the region maps, not the descriptor number the caller closed. */
    @Test
    void theCallersDescriptorClosedDoesNotHideATruncation() {
        int fd = Memfd.create("evidence-dup", 2 * MIB);
        int keep = FileSize.duplicate(fd);
        assertTrue(keep >= 0);
        GuestMemory m = GuestMemory.builder().addRegion(0, 2 * MIB, fd, 0, 0, false).build();
        try {
            Native.libc().close(fd); // the frontend's descriptor goes, the file stays
            assertEquals(0, Native.libc().ftruncate(keep, MIB));
            String evidence = m.shrinkEvidence();
            assertNotNull(evidence, "the table's own reference still sees the file");
            assertTrue(evidence.contains("now " + MIB + " bytes long"), evidence);
        } finally {
            m.close();
            Native.libc().close(keep);
        }
    }

    /** Holds: many regions, each with its own file: every duplicate is closed with the table. */
    @Test
    void aTableOfManyRegionsLeaksNoDescriptor() throws IOException {
        int regions = 64;
        int[] fds = new int[regions];
        for (int i = 0; i < regions; i++) {
            fds[i] = Memfd.create("many-" + i, MIB);
        }
        try {
            long before = -1;
            for (int round = 0; round < 5; round++) {
                if (round == 1) {
                    before = openDescriptors(); // after a first round has loaded every class (jars stay open)
                }
                GuestMemory.Builder b = GuestMemory.builder();
                for (int i = 0; i < regions; i++) {
                    b.addRegion(i * MIB, MIB, fds[i], 0, 0, false);
                }
                GuestMemory m = b.build();
                if (round > 0) {
                    // The test's own memfds are counted exactly: the process-wide count also moves
                    // with the JVM's own descriptors (a cleaner closing one, a jar opened), which
                    // failed a CI run once.
                    assertEquals(2 * regions, memfdDescriptors("many-"), () -> "one duplicate per region while the table lives: "
                            + describe());
                }
                assertEquals(0, Native.libc().ftruncate(fds[regions - 1], 4096));
                assertNotNull(m.shrinkEvidence());
                assertEquals(0, Native.libc().ftruncate(fds[regions - 1], MIB));
                m.close();
                m.close(); // idempotent: nothing closed twice
                if (round > 0) {
                    assertEquals(regions, memfdDescriptors("many-"), () -> "every duplicate closed with the table: " + describe());
                    long base = before;
                    long now = openDescriptors();
                    assertTrue(now <= base, () -> "no other descriptor kept: " + base + " -> " + now + ": " + describe());
                }
            }
        } finally {
            for (int fd : fds) {
                Native.libc().close(fd);
            }
        }
    }

    /** Holds: a table that failed to build (an overlapping region) leaves no duplicate behind. */
    @Test
    void aTableThatFailsToBuildLeaksNoDescriptor() throws IOException {
        int fd = Memfd.create("fails", 2 * MIB);
        try {
            // One failed build first: whatever the JVM opens for itself the first time this path
            // runs (class loading) is then open before the count, and only a leak can change it.
            failedBuild(fd);
            long before = openDescriptors();
            for (int i = 0; i < 4; i++) {
                try {
                    // The second region lies past the end of the 2 MiB file's mapping limit:
                    // mapping a range the kernel refuses, or a bad region, fails the build.
                    GuestMemory.builder().addRegion(0, MIB, fd, 0, 0, false)
                            .addRegion(MIB, MIB, -1, 0, 0, false).build().close();
                } catch (RuntimeException expected) {
                    // refused
                }
            }
            // The test's own memfd counted exactly (no duplicate of it left), and nothing else kept;
            // the process-wide count may drop meanwhile (the JVM closing one of its own).
            assertEquals(1, memfdDescriptors("fails"), ShrinkEvidenceAttackTest::describe);
            long now = openDescriptors();
            assertTrue(now <= before, () -> "descriptors " + before + " -> " + now + ": " + describe());
        } finally {
            Native.libc().close(fd);
        }
    }

    private static void failedBuild(int fd) {
        try {
            GuestMemory.builder().addRegion(0, MIB, fd, 0, 0, false).addRegion(MIB, MIB, -1, 0, 0, false).build().close();
        } catch (RuntimeException expected) {
            // refused
        }
    }

    private static String describe() {
        StringBuilder b = new StringBuilder();
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            s.forEach(p -> {
                try {
                    b.append(p.getFileName()).append("->").append(Files.readSymbolicLink(p)).append(' ');
                } catch (IOException e) {
                    b.append(p.getFileName()).append("->? ");
                }
            });
        } catch (IOException e) {
            b.append(e);
        }
        return b.toString();
    }

    /** This process's descriptors of memfds whose name starts with {@code name}. */
    private static long memfdDescriptors(String name) throws IOException {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return s.filter(p -> {
                try {
                    return Files.readSymbolicLink(p).toString().startsWith("/memfd:" + name);
                } catch (IOException e) {
                    return false; // closed meanwhile (the listing's own descriptor)
                }
            }).count();
        }
    }

    private static long openDescriptors() throws IOException {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return s.count();
        }
    }
}
