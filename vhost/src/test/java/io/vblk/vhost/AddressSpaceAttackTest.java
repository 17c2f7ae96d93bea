package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.VhostUserFrontend;

/**
 * irev3, outside review: a memfd can be made as large as one likes without a byte of memory
 * (ftruncate of a sparse file), so a frontend's memory table can ask this process to map tens of
 * TiB. Every table maps its whole size into the JVM's address space (128 TiB of user space on
 * x86-64): seven 16 TiB regions took 112 TiB here, and a JVM that then cannot mmap a thread
 * stack, a heap extension or a native buffer aborts. One table may map at most
 * {@link MemoryTable#MAX_TABLE_BYTES}, all connections together at most
 * {@link MemoryTable#MAX_MAPPED_BYTES}; the bytes come back when a table is unmapped.
 */
class AddressSpaceAttackTest extends OneServerCase {
    private static final long TIB = 1L << 40;
    private static final long USER = 0x1000_0000_0000L;

    private long budget;

    /**
     * These tests are about the process's address-space bounds: the exports' caps are at the
     * largest table, and the guest-memory budget (the host's memory) at the address-space bound.
     */
    @Override
    ServerRig startRig(java.nio.file.Path dir) throws java.io.IOException {
        budget = GuestMemoryBudget.bytes();
        GuestMemoryBudget.set(MemoryTable.MAX_MAPPED_BYTES);
        return ServerRig.startWithGuestMemoryCap(dir, MemoryTable.MAX_TABLE_BYTES);
    }

    @org.junit.jupiter.api.AfterEach
    void restoreBudget() {
        GuestMemoryBudget.set(budget);
    }

    private VhostUserFrontend owned(VhostUserFrontend f) {
        f.setProtocolFeatures(VhostUserProtocolTest.ALL_PROTOCOL);
        f.setOwner();
        return f;
    }

    private static long table(VhostUserFrontend f, int fd, long... sizes) {
        VhostUserFrontend.Region[] regions = new VhostUserFrontend.Region[sizes.length];
        int[] fds = new int[sizes.length];
        long gpa = 0;
        for (int i = 0; i < sizes.length; i++) {
            regions[i] = new VhostUserFrontend.Region(gpa, sizes[i], USER + gpa, 0);
            fds[i] = fd;
            gpa += sizes[i];
        }
        return f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(regions), fds);
    }

    @Test
    void aTableLargerThanAnyGuestIsRefusedAndItsBytesComeBack() {
        int sparse = Memfd.create("sparse-32TiB", 32 * TIB);
        try {
            long before = MemoryTable.mappedBytes();
            VhostUserFrontend f = owned(newSession());
            assertTrue(table(f, sparse, 16 * TIB + 4096) > 0, "one region above the bound: refused");
            assertTrue(table(f, sparse, 4 * TIB, 4 * TIB, 4 * TIB, 4 * TIB, 4096) > 0, "five below it, together above: refused");
            assertEquals(before, MemoryTable.mappedBytes(), "a refused table keeps nothing");
            assertEquals(0, table(f, sparse, 8 * TIB), "8 TiB: mapped");
            assertEquals(before + 8 * TIB, MemoryTable.mappedBytes());
            // ADD_MEM_REG builds the next table beside the current one: 8 + 8 + 4 KiB is too much.
            assertTrue(f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(
                    new VhostUserFrontend.Region(8 * TIB, 8 * TIB + 4096, USER + 8 * TIB, 0)), sparse) > 0);
            assertEquals(0, f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(
                    new VhostUserFrontend.Region(8 * TIB, 8 * TIB, USER + 8 * TIB, 0)), sparse), "8 + 8 TiB: mapped");
            assertEquals(before + 16 * TIB, MemoryTable.mappedBytes(), "the replaced table's bytes came back");
            f.close();
            rig.awaitGone(sessions);
            assertEquals(before, MemoryTable.mappedBytes(), "the connection's end gave everything back");
            complained("at most " + MemoryTable.MAX_TABLE_BYTES + " bytes are mapped for one frontend");
            VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
        } finally {
            Native.libc().close(sparse);
        }
    }

    /**
     * Five servers in one process (a daemon's exports), each frontend asking for 16 TiB: four
     * get it, the fifth is refused until one of the others has gone.
     */
    @Test
    void theFrontendsOfOneProcessTogetherMapAtMostTheBudget() throws Exception {
        int sparse = Memfd.create("sparse-16TiB", 16 * TIB);
        long before = MemoryTable.mappedBytes();
        int fit = (int) ((MemoryTable.MAX_MAPPED_BYTES - before) / (16 * TIB));
        List<ServerRig> rigs = new ArrayList<>();
        List<VhostUserFrontend> frontends = new ArrayList<>();
        try {
            for (int i = 0; i <= fit; i++) {
                ServerRig r = ServerRig.startWithGuestMemoryCap(Files.createDirectories(dir.resolve("export" + i)),
                        MemoryTable.MAX_TABLE_BYTES);
                rigs.add(r);
                frontends.add(owned(r.connect()));
            }
            for (int i = 0; i < fit; i++) {
                assertEquals(0, table(frontends.get(i), sparse, 16 * TIB), "frontend " + i + " within the budget");
            }
            VhostUserFrontend last = frontends.get(fit);
            assertTrue(table(last, sparse, 16 * TIB) > 0, "beyond the budget: refused");
            rigs.get(fit).awaitLine(l -> l.contains("the frontends of this process have"));
            frontends.get(0).close();
            rigs.get(0).awaitGone(1);
            assertEquals(0, table(last, sparse, 16 * TIB), "room again once one has gone");
        } finally {
            frontends.forEach(VhostUserFrontend::close);
            rigs.forEach(ServerRig::close);
            Native.libc().close(sparse);
        }
        assertEquals(before, MemoryTable.mappedBytes(), "every server's end gave its bytes back");
    }
}
