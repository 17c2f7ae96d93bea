package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;

import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.VhostUserFrontend;

/**
 * irev4 (a limit the last closing note listed as untested): a memory table whose mmap fails
 * after its address-space reservation, and after its first region was mapped. The first region is
 * a good memfd, the second a descriptor of the same kind of file opened read-only, which passes
 * every check (a regular file, large enough) and whose shared writable mmap then fails with
 * EACCES. The table is refused; the reservation comes back ({@link MemoryTable#mappedBytes});
 * the first region's mapping is unmapped and both descriptors the message carried are closed
 * (counted in /proc/self/maps and /proc/self/fd by the memfd's name); the table in force is
 * untouched and the frontend goes on.
 */
class MapFailureAttackTest extends OneServerCase {
    private static final long BYTES = 16L << 20;

    private static long count(Path listing, String name) throws IOException {
        if (Files.isDirectory(listing)) {
            long n = 0;
            try (var fds = Files.list(listing)) {
                for (Path fd : (Iterable<Path>) fds::iterator) {
                    try {
                        n += Files.readSymbolicLink(fd).toString().contains(name) ? 1 : 0;
                    } catch (IOException gone) {
                        // closed meanwhile
                    }
                }
            }
            return n;
        }
        return Files.readAllLines(listing).stream().filter(l -> l.contains(name)).count();
    }

    @Test
    void aTableWhoseSecondMapFailsGivesBackItsReservationMappingAndDescriptors() throws Exception {
        VhostUserFrontend f = newSession();
        f.setProtocolFeatures(VhostUserProtocolTest.ALL_PROTOCOL);
        f.setOwner();
        assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd, guest.fd));
        long before = MemoryTable.mappedBytes();
        int good = Memfd.create("irev4-good", BYTES);
        int bad = Memfd.create("irev4-bad", BYTES);
        int badReadOnly = Native.libc().open("/proc/self/fd/" + bad, 0 /* O_RDONLY */, 0);
        assertTrue(badReadOnly >= 0);
        try {
            long mapsBefore = count(Path.of("/proc/self/maps"), "irev4-");
            long fdsBefore = count(Path.of("/proc/self/fd"), "irev4-");
            for (int round = 0; round < 20; round++) {
                long refused = f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(
                        new VhostUserFrontend.Region(0, BYTES, 0x7000_0000_0000L, 0),
                        new VhostUserFrontend.Region(BYTES, BYTES, 0x7000_0000_0000L + BYTES, 0)), good, badReadOnly);
                assertTrue(refused > 0, "round " + round + ": refused");
                assertEquals(before, MemoryTable.mappedBytes(), "round " + round + ": the reservation came back");
            }
            complained("cannot be mapped");
            assertEquals(mapsBefore, count(Path.of("/proc/self/maps"), "irev4-"), "the first region's mapping was undone");
            long deadline = System.nanoTime() + 30_000_000_000L; // a hang guard: a leak never comes back
            while (count(Path.of("/proc/self/fd"), "irev4-") != fdsBefore && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(fdsBefore, count(Path.of("/proc/self/fd"), "irev4-"), "the message's descriptors were closed");
        } finally {
            Native.libc().close(good);
            Native.libc().close(bad);
            Native.libc().close(badReadOnly);
        }
        // The table in force still works: a ring in it is set up, the connection then ends cleanly.
        assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd, guest.fd));
        f.close();
        rig.awaitGone(sessions);
        assertEquals(before - guestBytes(), MemoryTable.mappedBytes(), "the connection's end gave its table back");
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }

    private long guestBytes() {
        long n = 0;
        for (VhostUserFrontend.Region r : guest.regions()) {
            n += r.size();
        }
        return n;
    }
}
