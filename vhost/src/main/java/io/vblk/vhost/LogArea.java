package io.vblk.vhost;

import java.util.ArrayList;
import java.util.List;

import io.vblk.hostmem.DirtyLog;
import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.sys.NativeException;

/**
 * The dirty log a frontend shares for a live migration (SET_LOG_BASE with LOG_SHMFD), mapped,
 * and the logs it replaced.
 *
 * <p>Everything about the area is checked like any frontend input before it is mapped: a size
 * that is a whole number of 64-bit words and at most {@link #MAX_LOG_BYTES} (a log that large
 * covers 32 TiB of guest memory), a page-aligned offset, a range inside the file, a file in
 * shared memory (tmpfs: never hugetlbfs, see {@link #check}), and a file sealed against shrinking (QEMU creates its log memfd sealed; an unsealed one could be cut
 * short under the mapping and make this process fault with SIGBUS on its next mark).
 *
 * <p>Replacement (QEMU sends a new log at every migration attempt, and resizes it when guest
 * memory grows) cannot unmap the old log at once: a data-plane thread may hold it. Replaced logs
 * are kept until {@link #releaseRetired()} is called once nothing can mark them: after every
 * data-plane thread passed a round (SET_LOG_BASE does this before it answers), with no ring
 * running, or when the connection ends. {@link #MAX_RETIRED} is a last resort, never reached
 * that way: beyond it SET_LOG_BASE is refused.
 */
final class LogArea implements AutoCloseable {
    /** The largest log accepted: 1 GiB of bitmap, 2^33 pages of 4 KiB. */
    static final long MAX_LOG_BYTES = 1L << 30;
    /** Replaced logs that may wait for the rings to stop. */
    static final int MAX_RETIRED = 8;
    // fcntl(2) file sealing (F_LINUX_SPECIFIC_BASE + 10), as in InflightBuffer.
    private static final int F_GET_SEALS = 1034;
    private static final int F_SEAL_SHRINK = 0x2;

    private Mapping mapping;
    private DirtyLog log;
    private final List<Mapping> retired = new ArrayList<>();
    private long retiredOutOfRange;
    private final List<DirtyLog> retiredLogs = new ArrayList<>();

    /** The log in force, or null before any SET_LOG_BASE. */
    DirtyLog log() {
        return log;
    }

    /**
     * Maps {@code size} bytes at {@code offset} of {@code fd} as the new log (the caller keeps
     * and closes {@code fd}); the previous one is retired.
     *
     * @throws ProtocolError (rejected) naming what does not fit
     */
    DirtyLog install(int fd, long size, long offset) {
        check(fd, size, offset);
        if (mapping != null && retired.size() >= MAX_RETIRED) {
            throw ProtocolError.rejected("SET_LOG_BASE: " + retired.size() + " replaced logs still wait for the rings"
                    + " to stop; no more are taken");
        }
        Mapping next;
        try {
            next = Mapping.map(fd, offset, size, false, true);
        } catch (NativeException e) {
            throw ProtocolError.rejected("SET_LOG_BASE log cannot be mapped: " + e.getMessage());
        }
        if (mapping != null) {
            retired.add(mapping);
            retiredLogs.add(log);
        }
        mapping = next;
        log = DirtyLog.atAddress(next.address(), size);
        return log;
    }

    /** The checks of the class comment. */
    static void check(int fd, long size, long offset) {
        if (size == 0 || (size & (Long.BYTES - 1)) != 0 || Long.compareUnsigned(size, MAX_LOG_BYTES) > 0) {
            throw ProtocolError.rejected("SET_LOG_BASE mmap_size " + Long.toUnsignedString(size)
                    + ": a multiple of 8 from 8 to " + MAX_LOG_BYTES + " expected");
        }
        if (offset < 0 || (offset & (Linux.PAGE_SIZE - 1)) != 0) {
            throw ProtocolError.rejected("SET_LOG_BASE mmap_offset " + Long.toUnsignedString(offset)
                    + " is not a page-aligned file offset");
        }
        Descriptors.regularFile(fd); // what it is: a regular file or memfd (its size is read below)
        // Shared memory only (QEMU's log is a sealed memfd on tmpfs). Marks are compare-and-set
        // on the mapping, and on hugetlbfs a page the frontend punched out cannot come back with
        // an empty pool: the CAS faults with SIGBUS, and HotSpot's interpreted Unsafe CAS has no
        // guard for it, so the whole JVM would die. A file elsewhere could stall a fault for ever.
        long type = Descriptors.fileSystemType(fd);
        if (type != Descriptors.TMPFS_MAGIC) {
            throw ProtocolError.rejected(String.format("SET_LOG_BASE log is a file on a file system of type 0x%x%s, not"
                    + " a shared-memory memfd (tmpfs): marking it could fault and stop the whole process", type,
                    type == Descriptors.HUGETLBFS_MAGIC ? " (hugetlbfs)" : ""));
        }
        // The seal first, the size after: a size read before the seal could be cut short by the
        // frontend in between, sealing the file only then, and the mapping would fault (SIGBUS).
        // Once F_SEAL_SHRINK is set it stays, so the size read after it holds for good.
        int seals = Native.libc().fcntl(fd, F_GET_SEALS, 0);
        if (seals == -1 || (seals & F_SEAL_SHRINK) == 0) {
            throw ProtocolError.rejected("SET_LOG_BASE log is not sealed against shrinking (seals "
                    + (seals == -1 ? "unsupported" : "0x" + Integer.toHexString(seals))
                    + "); it could be cut short under this process");
        }
        long fileSize = Descriptors.regularFileSize(fd);
        if (offset > fileSize || size > fileSize - offset) {
            throw ProtocolError.rejected("SET_LOG_BASE range [" + offset + ", +" + size
                    + ") runs past the end of its file (" + fileSize + " bytes)");
        }
    }

    /** Unmaps the replaced logs: call only when no ring runs (nothing can still mark them). */
    void releaseRetired() {
        for (DirtyLog l : retiredLogs) {
            retiredOutOfRange += l.outOfRange();
        }
        retiredLogs.clear();
        for (Mapping m : retired) {
            m.close();
        }
        retired.clear();
    }

    /** Marks that fell outside the frontend's logs so far (a log sized too small). */
    long outOfRange() {
        long n = retiredOutOfRange;
        for (DirtyLog l : retiredLogs) {
            n += l.outOfRange();
        }
        return n + (log == null ? 0 : log.outOfRange());
    }

    /** Unmaps every log: the connection is over and the device no longer logs. */
    @Override
    public void close() {
        releaseRetired();
        if (mapping != null) {
            mapping.close();
            mapping = null;
            log = null;
        }
    }

    @Override
    public String toString() {
        return log == null ? "no log" : log + " in " + mapping;
    }
}
