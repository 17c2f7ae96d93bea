package io.vblk.vhost;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.Mapping;
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

    /**
     * Most bytes one table may map (16 TiB, far above any guest's RAM). A frontend's memfd can be
     * sparse and as large as it likes, costing it nothing, while every byte mapped here takes
     * this process's address space (128 TiB): without a bound one frontend could leave the JVM
     * none for its heap, thread stacks or native buffers, and the JVM aborts when an mmap fails.
     */
    static final long MAX_TABLE_BYTES = 1L << 44;
    /**
     * Most bytes the tables of all connections of this process may map at once (64 TiB): half the
     * address space stays for the JVM whatever any number of frontends do. A table being
     * replaced counts until it is unmapped.
     */
    static final long MAX_MAPPED_BYTES = 1L << 46;
    /**
     * Default of an export's guest-memory cap ({@link VhostUserServer.Builder#maxGuestMemory}):
     * 1 TiB, above the RAM of any guest one block device is commonly attached to, and 64 such
     * tables fit {@link #MAX_MAPPED_BYTES}: a frontend's sparse memfd is mapped in full and every
     * page the device writes in it is allocated on this process's fault (charged to its memory
     * cgroup), so without a cap one frontend could make the process grow to 16 TiB and four
     * could take the whole mapping budget from every other export.
     */
    static final long DEFAULT_MAX_GUEST_BYTES = 1L << 40;
    /** How an operator raises the cap, for the message that refuses a table above it. */
    static final String CAP_OPTION = "vblk serve --max-guest-memory, export option max_guest_memory";
    private static final AtomicLong MAPPED = new AtomicLong();
    /** A table left mapped by a failed munmap is logged once per process: it cannot repeat harmlessly for ever. */
    private static final java.util.concurrent.atomic.AtomicBoolean LEAK_LOGGED = new java.util.concurrent.atomic.AtomicBoolean();
    private static final String ANY_FILE_SYSTEM_PROPERTY = VhostUserServer.GUEST_MEMORY_ANY_FILE_SYSTEM;

    private List<Region> regions = List.of();
    private GuestMemory memory;
    private final long maxBytes;
    private final Log log;

    /** A table for one connection, whose tables may map at most {@code maxBytes} (the export's cap). */
    MemoryTable(long maxBytes, Log log) {
        this.maxBytes = maxBytes;
        this.log = log;
    }

    /** The export's guest-memory cap: the most bytes one table of this connection maps. */
    long maxBytes() {
        return maxBytes;
    }

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
        return map(wanted, MAX_TABLE_BYTES);
    }

    /**
     * As {@link #map(List)}, for an export whose tables may map at most {@code maxBytes}.
     *
     * @throws ProtocolError (rejected) naming the region that cannot be mapped, or the cap
     */
    static GuestMemory map(List<Region> wanted, long maxBytes) {
        return map(wanted, maxBytes, 0);
    }

    /**
     * As {@link #map(List, long)}, replacing a table of {@code replacing} bytes of the same
     * connection: the new table is mapped beside it, and both count against the process's
     * address-space bound until the old one is unmapped, but against the guest-memory budget
     * ({@link GuestMemoryBudget}) the old one does not count: the two map the same guest's memory
     * (a guest of 15 GiB on a 23 GiB host must be able to add a region).
     */
    static GuestMemory map(List<Region> wanted, long maxBytes, long replacing) {
        GuestMemory.Builder b = GuestMemory.builder();
        for (Region r : wanted) {
            check(r);
            b.addRegion(r.guestAddress, r.size, r.fd, r.mmapOffset, r.userAddress, false);
        }
        long bytes = reserve(wanted, maxBytes, replacing);
        boolean mapped = false;
        try {
            GuestMemory memory = b.build();
            mapped = true;
            return memory;
        } catch (IllegalArgumentException | NativeException e) {
            throw ProtocolError.rejected("memory table cannot be mapped: " + e.getMessage());
        } finally {
            if (!mapped) {
                release(bytes); // whatever failed, an Error too: the session survives it, the budget must
            }
        }
    }

    /** The bytes {@code regions} map (each size checked positive, so the sum is capped before it can wrap). */
    static long bytes(List<Region> regions) {
        long total = 0;
        for (Region r : regions) {
            total = r.size > MAX_MAPPED_BYTES || total > MAX_MAPPED_BYTES ? Long.MAX_VALUE : total + r.size;
        }
        return total;
    }

    /** Takes {@code wanted}'s bytes from the process's budget, or refuses the table. */
    private static long reserve(List<Region> wanted, long maxBytes, long replacing) {
        long bytes = bytes(wanted);
        if (bytes > maxBytes && maxBytes < MAX_TABLE_BYTES) {
            throw ProtocolError.rejected("memory table of " + (bytes == Long.MAX_VALUE ? "more than 2^63" : bytes)
                    + " bytes: this export maps at most " + maxBytes + " bytes of guest memory (" + CAP_OPTION + ")");
        }
        if (bytes > MAX_TABLE_BYTES) {
            throw ProtocolError.rejected("memory table of " + (bytes == Long.MAX_VALUE ? "more than 2^63" : bytes)
                    + " bytes: at most " + MAX_TABLE_BYTES + " bytes are mapped for one frontend");
        }
        long now;
        do {
            now = MAPPED.get();
            if (now + bytes > MAX_MAPPED_BYTES) {
                throw ProtocolError.rejected("memory table of " + bytes + " bytes: the frontends of this process have "
                        + now + " bytes mapped, and at most " + MAX_MAPPED_BYTES + " are");
            }
            long budget = GuestMemoryBudget.bytes();
            long others = Math.max(0, now - replacing);
            if (others + bytes > budget) {
                throw ProtocolError.rejected("memory table of " + bytes + " bytes: the frontends of this process would"
                        + " map " + (others + bytes) + " bytes of guest memory (" + others + " mapped by others), above"
                        + " the process's guest-memory budget of " + budget + " bytes (the host's memory or its memory"
                        + " cgroup's limit; " + GuestMemoryBudget.OPTION + "; each export's share: " + CAP_OPTION + ")");
            }
        } while (!MAPPED.compareAndSet(now, now + bytes));
        return bytes;
    }

    /** Gives back what {@link #reserve} took, once the table is unmapped (or was never mapped). */
    static void release(long bytes) {
        MAPPED.addAndGet(-bytes);
    }

    /**
     * Closes {@code table}, mapped from {@code regions}, and gives its bytes back when its regions
     * are really unmapped: at once, or when a device still attached to it (an undrained one: its
     * back end or the kernel may still write there) detaches, which may be never. Until then they
     * count, or a frontend that disconnects and connects again would map more than the budget
     * while its old tables stay mapped. When an munmap failed the memory stays mapped for the
     * process's life and stays counted (logged once per process).
     */
    void unmap(GuestMemory table, List<Region> regions) {
        long bytes = bytes(regions);
        table.whenUnmapped(() -> {
            if (!table.unmapFailed()) {
                release(bytes);
            } else if (LEAK_LOGGED.compareAndSet(false, true)) {
                log.info("memory table " + regions + " could not be unmapped (munmap failed): its " + bytes
                        + " bytes stay mapped and counted for this process's life (logged once)");
            }
        });
        table.close();
    }

    /** Bytes mapped for all frontends of this process (tables in force and being replaced). */
    static long mappedBytes() {
        return MAPPED.get();
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
        long type = Descriptors.fileSystemType(r.fd);
        if (!Descriptors.isMemoryFileSystem(type) && !Boolean.getBoolean(ANY_FILE_SYSTEM_PROPERTY)) {
            throw ProtocolError.rejected(String.format("memory region %s is a file on a file system of type 0x%x, not"
                    + " shared memory (memfd, tmpfs) or hugetlbfs: a fault on it could wait for ever on the file's"
                    + " server and stop the whole process (-D%s=true maps it anyway)", r, type,
                    ANY_FILE_SYSTEM_PROPERTY));
        }
        // hugetlbfs maps and unmaps whole huge pages only: munmap(2) of a region that is not a
        // whole number of them fails, and the mapping would stay for the process's life.
        // (Other files take any size and offset: GuestMemory maps from the page holding the offset.)
        long page = type == Descriptors.HUGETLBFS_MAGIC ? Mapping.pageSizeOf(r.fd) : 0;
        if (page > 0 && ((r.size | r.mmapOffset) & (page - 1)) != 0) {
            throw ProtocolError.rejected("memory region " + r + " is on hugetlbfs, whose pages are " + page
                    + " bytes: its size and mmap offset must be multiples of that");
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
            unmap(old, oldRegions);
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
