package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.VhostUserFrontend;

/**
 * rev16c F2: the default per-export cap (1 TiB) never bound: a frontend's sparse memfd costs it
 * nothing, and every page the device writes there is allocated on this process's fault (+195 MiB
 * for 50,000 reads into a sparse 64 GiB memfd). The process-wide guest-memory budget (default:
 * the host's memory, or the memory cgroup's limit) binds with defaults: a table larger than the
 * host is refused, the message naming the option; the budget is shared by every frontend, and
 * a connection's table being replaced (ADD_MEM_REG maps the next table beside it) does not count
 * twice, so a guest of most of the budget can still add a region.
 */
class GuestMemoryBudgetTest extends OneServerCase {
    private static final long GIB = 1L << 30;
    private static final long USER = 0x1000_0000_0000L;

    private static VhostUserFrontend owned(VhostUserFrontend f) {
        f.setProtocolFeatures(VhostUserProtocolTest.ALL_PROTOCOL);
        f.setOwner();
        return f;
    }

    private static long table(VhostUserFrontend f, int fd, long bytes) {
        return f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(
                new VhostUserFrontend.Region(0, bytes, USER, 0)), fd);
    }

    @Test
    void aSparseTableLargerThanTheHostIsRefusedWithDefaults() {
        assertEquals(VhostUserServer.hostGuestMemoryBudget(), VhostUserServer.guestMemoryBudget(), "the default budget");
        long beyond = ((VhostUserServer.guestMemoryBudget() >> 30) + 1) << 30;
        assertTrue(beyond < VhostUserServer.DEFAULT_MAX_GUEST_MEMORY, "below the export's default cap");
        int sparse = Memfd.create("sparse", 2 * beyond);
        try {
            long before = MemoryTable.mappedBytes();
            VhostUserFrontend f = owned(newSession());
            assertTrue(table(f, sparse, beyond) > 0, "a table larger than the host's memory: refused");
            assertEquals(before, MemoryTable.mappedBytes());
            complained("--guest-memory-budget");
            assertEquals(0, table(f, sparse, 2 * GIB), "a guest of a few GiB attaches with defaults");
            f.close();
            rig.awaitGone(sessions);
            VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
        } finally {
            Native.libc().close(sparse);
        }
    }

    /** Two exports (two servers of one process): their frontends share the budget. */
    @Test
    void theBudgetIsSharedAndAReplacedTableDoesNotCountTwice() throws Exception {
        long saved = VhostUserServer.guestMemoryBudget();
        long before = MemoryTable.mappedBytes();
        VhostUserServer.guestMemoryBudget(before + 3 * GIB);
        int sparse = Memfd.create("sparse", 8 * GIB);
        try (ServerRig other = ServerRig.start(java.nio.file.Files.createDirectories(dir.resolve("other")), 1)) {
            VhostUserFrontend a = owned(newSession());
            int aId = sessions;
            VhostUserFrontend b = owned(other.connect());
            assertEquals(0, table(a, sparse, 2 * GIB), "A: 2 of 3 GiB");
            assertTrue(table(b, sparse, 2 * GIB) > 0, "B: 2 more GiB would pass the budget: refused");
            other.awaitLine(l -> l.contains("guest-memory budget") && l.contains("--guest-memory-budget"));
            // A grows to 2.5 GiB: the next table is mapped beside its current one (4.5 GiB at once),
            // but the two are the same guest's memory.
            assertEquals(0, a.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(
                    new VhostUserFrontend.Region(2 * GIB, GIB / 2, USER + 2 * GIB, 2 * GIB)), sparse));
            assertEquals(before + 2 * GIB + GIB / 2, MemoryTable.mappedBytes());
            a.close();
            rig.awaitGone(aId);
            assertEquals(0, table(b, sparse, 2 * GIB), "room again once A has gone");
            b.close();
            other.awaitGone(1);
        } finally {
            VhostUserServer.guestMemoryBudget(saved);
            Native.libc().close(sparse);
        }
    }

    /**
     * Session 17: a connection's table was given back to the budget when the connection closed
     * it, though a device still attached to it kept its regions mapped (an undrained device: the
     * kernel may still write there, so the table stays until the device detaches, possibly
     * never): a frontend could disconnect and connect again to map past the budget. Here a
     * second user attached to the table (as a BlockDevice attaches; an undrained one never
     * detaches on its own) keeps it mapped; the next connection's table is refused while old and
     * new would pass the budget, and accepted once the old one is unmapped.
     */
    @Test
    void aTableStillMappedUnderADeviceCountsUntilItIsUnmapped() throws Exception {
        long saved = VhostUserServer.guestMemoryBudget();
        long before = MemoryTable.mappedBytes();
        VhostUserServer.guestMemoryBudget(before + 3 * GIB);
        int sparse = Memfd.create("sparse", 8 * GIB);
        Object undrained = "an undrained device";
        GuestMemory held = null;
        try {
            VhostUserFrontend a = owned(newSession());
            int aId = sessions;
            assertEquals(0, table(a, sparse, 2 * GIB), "A: 2 of 3 GiB");
            held = rig.server.device().memory();
            held.attach(undrained);
            a.close();
            rig.awaitGone(aId);
            assertTrue(held.isClosed() && !held.isUnmapped(), "A's table is closed, and still mapped under the device");
            assertEquals(before + 2 * GIB, MemoryTable.mappedBytes(), "a table still mapped still counts");
            VhostUserFrontend b = owned(newSession());
            assertTrue(table(b, sparse, 2 * GIB) > 0, "B: 2 GiB beside A's 2 GiB still mapped would pass the budget: refused");
            complained("guest-memory budget");
            held.detach(undrained); // the device let go: the table is unmapped now
            assertTrue(held.isUnmapped());
            held = null;
            assertEquals(before, MemoryTable.mappedBytes(), "given back once unmapped");
            assertEquals(0, table(b, sparse, 2 * GIB), "room again once A's table is unmapped");
            b.close();
            rig.awaitGone(sessions);
            assertEquals(before, MemoryTable.mappedBytes());
        } finally {
            if (held != null) {
                held.detach(undrained);
            }
            VhostUserServer.guestMemoryBudget(saved);
            Native.libc().close(sparse);
        }
    }
}
