package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.VhostUserFrontend;

/**
 * rev15b: a frontend's memory table is bounded by its export's guest-memory cap
 * ({@link VhostUserServer.Builder#maxGuestMemory}, default 1 TiB), not only by the process's
 * mapping budget.
 *
 * <p>Before the cap, one frontend could add a sparse 1 to 16 TiB memfd region and point read
 * buffers at fresh pages of it: every page the device wrote was allocated on this process's
 * fault, charged to its memory cgroup (the OOM killer then takes the daemon and every disk);
 * and four frontends with sparse 16 TiB tables took the whole 64 TiB budget, so every other
 * export's SET_MEM_TABLE was refused.
 */
class GuestMemoryCapAttackTest extends OneServerCase {
    private static final long TIB = 1L << 40;

    /** Was FrontendMakesDaemonAllocateAttackTest: the 1 TiB sparse region came in beside the guest's memory. */
    @Test
    void aSparseRegionBeyondTheCapIsRefusedAndTheGuestGoesOn() throws Exception {
        int sparse = Memfd.create("sparse-guest", TIB);
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(QemuFlow.ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            VhostUserFrontend.Region r = new VhostUserFrontend.Region(TIB, TIB, 0x6000_0000_0000L, 0);
            assertTrue(qemu.f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), sparse) > 0,
                    "the guest's memory and 1 TiB more: above the default cap, refused");
            complained("max_guest_memory");
            q.write(8, BlkQueue.pattern(8, 4096, 3));
            qemu.stop(q);
        } finally {
            Native.libc().close(sparse);
        }
    }

    /** Was MappedBudgetLockoutAttackTest: four sparse 16 TiB tables took the budget of every export. */
    @Test
    void sparseTablesAtTheirCapsLeaveTheBudgetToOtherExports() {
        long cap = VhostUserServer.DEFAULT_MAX_GUEST_MEMORY;
        int big = Memfd.create("sparse-16t", MemoryTable.MAX_TABLE_BYTES);
        int small = Memfd.create("honest-1g", 1L << 30);
        List<GuestMemory> hostile = new ArrayList<>();
        long before = MemoryTable.mappedBytes();
        long budget = GuestMemoryBudget.bytes();
        GuestMemoryBudget.set(MemoryTable.MAX_MAPPED_BYTES); // the address-space bound, not the host's memory
        try {
            for (int i = 0; i < 4; i++) {
                ProtocolError refused = assertThrows(ProtocolError.class, () -> MemoryTable.map(
                        List.of(new MemoryTable.Region(0, MemoryTable.MAX_TABLE_BYTES, 0, 0, big)), cap));
                assertTrue(refused.getMessage().contains("max_guest_memory"), refused.getMessage());
                hostile.add(MemoryTable.map(List.of(new MemoryTable.Region(0, cap, 0, 0, big)), cap));
            }
            assertEquals(before + 4 * cap, MemoryTable.mappedBytes(), "four frontends at their caps");
            GuestMemory honest = MemoryTable.map(List.of(new MemoryTable.Region(0, 1L << 30, 0, 0, small)), cap);
            honest.close();
            MemoryTable.release(1L << 30);
        } finally {
            GuestMemoryBudget.set(budget);
            for (GuestMemory m : hostile) {
                m.close();
                MemoryTable.release(cap);
            }
            Native.libc().close(big);
            Native.libc().close(small);
        }
        assertEquals(before, MemoryTable.mappedBytes());
    }
}
