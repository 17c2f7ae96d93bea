package io.vblk.sys;

/**
 * A memory mapping of a descriptor (or anonymous memory), optionally fenced by PROT_NONE guard
 * pages on both sides so that any access one byte outside it faults at once instead of landing
 * in unrelated memory.
 *
 * <pre>
 *  reservation: [ guard page | mapping (length, page-rounded) | guard page ]
 *                             ^ address()
 * </pre>
 *
 * <p>A file on hugetlbfs is mapped in whole huge pages: mmap(2) rounds the length up to one,
 * and munmap(2) refuses (EINVAL) any length that is not a multiple of one, so the length kept
 * for the unmap is rounded to the file's page size ({@link #pageSizeOf}), not to 4 KiB. An unmap
 * that still fails is kept ({@link #unmapFailed()}): that mapping stays for the process's life,
 * and whoever counted its bytes must not count them as given back.
 */
public final class Mapping implements AutoCloseable {
    private final long reservation;
    private final long reservationLength;
    private final long address;
    private final long length;
    private boolean unmapped;
    /** errno of a failed munmap(2), or 0. */
    private int unmapErrno;

    private Mapping(long reservation, long reservationLength, long address, long length) {
        this.reservation = reservation;
        this.reservationLength = reservationLength;
        this.address = address;
        this.length = length;
    }

    /**
     * Maps {@code length} bytes of {@code fd} at {@code offset} shared, readable, and writable unless
     * {@code readOnly}. With {@code guarded}, a PROT_NONE page is reserved on each side.
     */
    public static Mapping map(int fd, long offset, long length, boolean readOnly, boolean guarded) {
        checkArgs(offset, length);
        int prot = Linux.PROT_READ | (readOnly ? 0 : Linux.PROT_WRITE);
        int flags = Linux.MAP_SHARED;
        return mapInto(fd, offset, length, prot, flags, guarded);
    }

    /** Maps {@code length} bytes of zeroed private anonymous memory, optionally guarded. */
    public static Mapping anonymous(long length, boolean guarded) {
        checkArgs(0, length);
        return mapInto(-1, 0, length, Linux.PROT_READ | Linux.PROT_WRITE,
                Linux.MAP_PRIVATE | Linux.MAP_ANONYMOUS, guarded);
    }

    private static void checkArgs(long offset, long length) {
        if (length <= 0 || offset < 0 || (offset & (Linux.PAGE_SIZE - 1)) != 0) {
            throw new IllegalArgumentException("bad mapping: offset " + offset + " length " + length
                    + " (offset must be page-aligned, length positive)");
        }
    }

    /** Maps with the given mmap(2) flags (package-private: tests map hugetlbfs MAP_NORESERVE). */
    static Mapping mapInto(int fd, long offset, long length, int prot, int flags, boolean guarded) {
        LibC libc = Native.libc();
        long page = fd < 0 ? Linux.PAGE_SIZE : pageSizeOf(fd);
        long rounded = (length + page - 1) & -page;
        if (!guarded) {
            long addr = libc.mmap(0, rounded, prot, flags, fd, offset);
            if (addr == Linux.MAP_FAILED) {
                throw new NativeException(Native.errno(), "mmap", 0, rounded, prot, flags, fd, offset);
            }
            return new Mapping(addr, rounded, addr, length);
        }
        long total = rounded + 2L * Linux.PAGE_SIZE;
        long reservation = libc.mmap(0, total, Linux.PROT_NONE,
                Linux.MAP_PRIVATE | Linux.MAP_ANONYMOUS | Linux.MAP_NORESERVE, -1, 0);
        if (reservation == Linux.MAP_FAILED) {
            throw new NativeException(Native.errno(), "mmap(reserve)", total);
        }
        long inner = reservation + Linux.PAGE_SIZE;
        long addr = libc.mmap(inner, rounded, prot, flags | Linux.MAP_FIXED, fd, offset);
        if (addr != inner) {
            int errno = Native.errno();
            libc.munmap(reservation, total);
            throw new NativeException(errno, "mmap(fixed)", inner, rounded, prot, flags, fd, offset);
        }
        return new Mapping(reservation, total, inner, length);
    }

    /**
     * The page size the kernel maps {@code fd}'s file in: its huge page size on hugetlbfs
     * (statfs f_bsize), else {@link Linux#PAGE_SIZE} (also when fstatfs fails: then mmap fails
     * too). Allocates its buffer; off the data path.
     */
    public static long pageSizeOf(int fd) {
        FileSystemStat fs;
        try {
            fs = FileSystemStat.of(fd);
        } catch (NativeException e) {
            return Linux.PAGE_SIZE;
        }
        if (!fs.hugetlbfs()) {
            return Linux.PAGE_SIZE;
        }
        long bsize = fs.blockSize();
        return bsize > Linux.PAGE_SIZE && Long.bitCount(bsize) == 1 ? bsize : Linux.PAGE_SIZE;
    }

    /** Rounds {@code length} up to a whole number of pages. */
    public static long roundUpToPage(long length) {
        return (length + Linux.PAGE_SIZE - 1) & -(long) Linux.PAGE_SIZE;
    }

    /** The first usable byte. */
    public long address() {
        return address;
    }

    /** The usable length in bytes (as asked, not rounded). */
    public long length() {
        return length;
    }

    /**
     * Unmaps the whole reservation, guard pages included. Idempotent. A failed munmap(2) is not
     * tried again: see {@link #unmapFailed()}.
     */
    @Override
    public synchronized void close() {
        if (!unmapped) {
            unmapped = true;
            if (Native.libc().munmap(reservation, reservationLength) != 0) {
                unmapErrno = Native.errno();
            }
        }
    }

    /**
     * Whether {@link #close()} failed to unmap: the memory stays mapped (and the file referenced)
     * for the process's life. Never true for a length this class rounded itself; kept so that a
     * caller counting mapped bytes never counts these as given back.
     */
    public synchronized boolean unmapFailed() {
        return unmapErrno != 0;
    }

    /** errno of the failed munmap(2) ({@link #unmapFailed()}), or 0. */
    public synchronized int unmapErrno() {
        return unmapErrno;
    }

    @Override
    public String toString() {
        return String.format("Mapping[0x%x, %d bytes]", address, length);
    }
}
