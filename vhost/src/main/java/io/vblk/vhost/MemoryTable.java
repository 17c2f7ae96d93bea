package io.vblk.vhost;

import java.util.ArrayList;
import java.util.List;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.NativeException;

/**
 * The frontend's memory regions as this connection received them, each with the descriptor it
 * came with, and the {@link GuestMemory} table mapped from them. Regions are immutable; a change
 * (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG) builds a whole new table beside the old one, which
 * the caller installs in the device and only then closes, so the data plane never sees a
 * half-built table.
 *
 * <p>The descriptors stay open while their region is in the table: adding a region re-maps the
 * others from them.
 */
final class MemoryTable implements AutoCloseable {
    /**
     * One region: guest-physical range, the frontend's virtual address of its start (ring
     * addresses are given in those), and where it lies in {@code fd}.
     */
    record Region(long guestAddress, long size, long userAddress, long mmapOffset, int fd) {
        /** Whether {@code other} describes the same range (REM_MEM_REG ignores the mmap offset). */
        boolean sameRange(Region other) {
            return guestAddress == other.guestAddress && size == other.size && userAddress == other.userAddress;
        }

        @Override
        public String toString() {
            return String.format("[gpa 0x%x, %d bytes, user 0x%x, offset 0x%x]", guestAddress, size, userAddress, mmapOffset);
        }
    }

    private List<Region> regions = List.of();
    private GuestMemory memory;

    /** The mapped table, or null before the first one. */
    GuestMemory memory() {
        return memory;
    }

    List<Region> regions() {
        return regions;
    }

    /**
     * Checks {@code wanted} and maps it as a new table, without installing it.
     *
     * @throws ProtocolError (rejected) naming the region that cannot be mapped
     */
    static GuestMemory map(List<Region> wanted) {
        GuestMemory.Builder b = GuestMemory.builder();
        for (Region r : wanted) {
            check(r);
            b.addRegion(r.guestAddress, r.size, r.fd, r.mmapOffset, r.userAddress, false);
        }
        try {
            return b.build();
        } catch (IllegalArgumentException | NativeException e) {
            throw ProtocolError.rejected("memory table cannot be mapped: " + e.getMessage());
        }
    }

    private static void check(Region r) {
        if (r.size <= 0) {
            throw ProtocolError.rejected("memory region " + r + " has no size, or one above 2^63");
        }
        // A mapping past the end of its file faults with SIGBUS when touched: refuse it here.
        long fileSize = Descriptors.regularFileSize(r.fd);
        if (r.mmapOffset < 0 || r.mmapOffset > fileSize || r.size > fileSize - r.mmapOffset) {
            throw ProtocolError.rejected("memory region " + r + " runs past the end of its file (" + fileSize + " bytes)");
        }
    }

    /**
     * Makes {@code newRegions} mapped as {@code newMemory} current, after the caller installed it
     * in the device. Closes the old table and the descriptors of regions that are gone.
     */
    void replace(List<Region> newRegions, GuestMemory newMemory) {
        GuestMemory old = memory;
        List<Region> oldRegions = regions;
        regions = List.copyOf(newRegions);
        memory = newMemory;
        if (old != null) {
            old.close();
        }
        for (Region r : oldRegions) {
            if (!newRegions.contains(r)) {
                Descriptors.close(r.fd);
            }
        }
    }

    /** The regions with {@code added} appended. */
    List<Region> with(Region added) {
        List<Region> list = new ArrayList<>(regions);
        list.add(added);
        return list;
    }

    /** The index of the region {@code wanted} names (same range), or -1. */
    int find(Region wanted) {
        for (int i = 0; i < regions.size(); i++) {
            if (regions.get(i).sameRange(wanted)) {
                return i;
            }
        }
        return -1;
    }

    /** Closes the table and every descriptor; the device must no longer use it. */
    @Override
    public void close() {
        replace(List.of(), null);
    }

    @Override
    public String toString() {
        return regions.toString();
    }
}
