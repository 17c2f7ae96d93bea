package io.vblk.hostmem;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.FileSize;
import io.vblk.sys.Linux;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;

/**
 * {@link GuestMemory#shrinkEvidence()}: the evidence a late guest-memory fault is attributed by
 * (engine GuestFaults). A table whose file is now shorter than a region's end in it says which
 * region; an intact one says nothing; a closed one keeps what it found when it was unmapped; a
 * caller's descriptor closed (and its number reused) under the table changes nothing; and the
 * frontend's shared file offset is never moved.
 */
class ShrinkEvidenceTest {
    private static final long MIB = 1L << 20;

    @TempDir
    Path dir;

    @Test
    void aRegionWhoseFileShrankIsNamedAndAnIntactTableSaysNothing() {
        int fd = Memfd.create("evidence", 4 * MIB);
        try (GuestMemory m = GuestMemory.builder().addRegion(0, 2 * MIB, fd, 0, 0, false)
                .addRegion(2 * MIB, 2 * MIB, fd, 2 * MIB, 0, false).build()) {
            assertNull(m.shrinkEvidence());
            assertEquals(0, Native.libc().ftruncate(fd, 3 * MIB)); // cuts into the second region only
            String evidence = m.shrinkEvidence();
            assertNotNull(evidence);
            assertTrue(evidence.contains("gpa 0x200000") && evidence.contains("maps up to byte " + 4 * MIB)
                    && evidence.contains("now " + 3 * MIB + " bytes long"), evidence);
            assertEquals(0, Native.libc().ftruncate(fd, 4 * MIB)); // grown back: the change stays evidence (rev16c)
            assertNotNull(m.shrinkEvidence());
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aClosedTableKeepsWhatItFoundAtUnmapAndTheCallersDescriptorMayGo() {
        int fd = Memfd.create("evidence", 2 * MIB);
        GuestMemory m = GuestMemory.builder().addRegion(0, 2 * MIB, fd, 0, 0, false).build();
        // The caller closes its descriptor, and the number is reused by an unrelated, short file.
        Native.libc().close(fd);
        int other = Memfd.create("other", 4096);
        try {
            assertNull(m.shrinkEvidence(), "the table keeps its own reference to the file it maps");
            m.close();
            assertNull(m.shrinkEvidence());
        } finally {
            Native.libc().close(other);
        }
        int shrinking = Memfd.create("shrinking", 2 * MIB);
        GuestMemory gone = GuestMemory.builder().addRegion(0, 2 * MIB, shrinking, 0, 0, false).build();
        assertEquals(0, Native.libc().ftruncate(shrinking, 0));
        gone.close();
        assertEquals(0, Native.libc().ftruncate(shrinking, 2 * MIB)); // after the unmap: cannot fault any more
        assertNotNull(gone.shrinkEvidence(), "what was true when the table was unmapped");
        Native.libc().close(shrinking);
    }

    @Test
    void filesAndMemfdsTheTableOwnsShowEvidenceAndAskingMovesNoFileOffset() throws Exception {
        Path file = Files.write(dir.resolve("ram"), new byte[(int) (2 * MIB)]);
        try (GuestMemory m = GuestMemory.builder().addFile(0, 2 * MIB, file, 0, false).addMemfd(4 * MIB, MIB).build()) {
            assertNull(m.shrinkEvidence());
            try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.WRITE)) {
                ch.truncate(MIB);
            }
            assertNotNull(m.shrinkEvidence());
        }
        int fd = Memfd.create("offset", MIB);
        try (GuestMemory m = GuestMemory.builder().addRegion(0, MIB, fd, 0, 0, false).build()) {
            assertEquals(100, Native.libc().lseek(fd, 100, Linux.SEEK_SET));
            m.shrinkEvidence();
            assertEquals(100, Native.libc().lseek(fd, 0, Linux.SEEK_CUR), "the shared file offset is untouched");
            assertEquals(MIB, FileSize.of(fd));
        } finally {
            Native.libc().close(fd);
        }
    }
}
