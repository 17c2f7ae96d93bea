package io.vblk.vhost;

import io.vblk.sys.LibC;
import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.sys.NativeException;

/**
 * The inflight buffer of a connection: the shared memory a frontend handed over with
 * SET_INFLIGHT_FD, mapped, cut into one {@link InflightRegion} per queue. The frontend keeps the
 * memory across backend restarts; this process only maps it, and unmaps it when the frontend
 * replaces it or goes away (the device must no longer use any of its regions by then).
 *
 * <p>vblk creates the buffers it hands out (GET_INFLIGHT_FD) as memfds sealed at their size, and
 * takes back only buffers sealed against shrinking: the frontend can write the memory (that is
 * what recovery checks), but cannot truncate it under a running backend.
 */
final class InflightBuffer implements AutoCloseable {
    // fcntl(2) file sealing (F_LINUX_SPECIFIC_BASE + 9 and + 10), not in io.vblk.sys.Linux.
    private static final int F_ADD_SEALS = 1033;
    private static final int F_GET_SEALS = 1034;
    private static final int F_SEAL_SEAL = 0x1;
    private static final int F_SEAL_SHRINK = 0x2;
    private static final int F_SEAL_GROW = 0x4;

    private final Mapping mapping;
    private final InflightRegion[] regions;
    private final int queueSize;
    private final Descriptors.RegularFile file;
    private final long mmapOffset;

    private InflightBuffer(Mapping mapping, int numQueues, int queueSize, Descriptors.RegularFile file,
            long mmapOffset) {
        this.mapping = mapping;
        this.queueSize = queueSize;
        this.file = file;
        this.mmapOffset = mmapOffset;
        this.regions = new InflightRegion[numQueues];
        long stride = InflightDescriptor.regionBytes(queueSize);
        for (int q = 0; q < numQueues; q++) {
            regions[q] = new InflightRegion(mapping.address() + q * stride, queueSize);
        }
    }

    /**
     * Creates a zeroed buffer for {@code numQueues} queues of {@code queueSize} (GET_INFLIGHT_FD)
     * and returns its descriptor, which the caller sends and closes. The buffer is sealed at its
     * size: a frontend that could shrink it would make this process fault on its next store
     * (SIGBUS), so {@link #map} only takes buffers sealed that way.
     */
    static int create(int numQueues, int queueSize) {
        long bytes = InflightDescriptor.bufferBytes(numQueues, queueSize);
        LibC libc = Native.libc();
        // A new memfd reads as zeros: every region starts uninitialised (version 0).
        int fd = (int) Native.check(libc.memfd_create("vblk-inflight", Linux.MFD_CLOEXEC | Linux.MFD_ALLOW_SEALING),
                "memfd_create", "vblk-inflight");
        if (libc.ftruncate(fd, bytes) == -1
                || libc.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == -1) {
            int errno = Native.errno();
            libc.close(fd);
            throw new NativeException(errno, "ftruncate/F_ADD_SEALS", fd, bytes);
        }
        return fd;
    }

    /**
     * Maps the buffer the frontend sent (SET_INFLIGHT_FD). The layout is the one this backend
     * hands out, so {@code mmapSize} must be exactly what {@code numQueues} regions of
     * {@code queueSize} take, and the range must lie inside {@code fd}'s file (touching a mapping
     * past the end of a file raises SIGBUS). Does not take {@code fd}: the caller closes it.
     *
     * <p>QEMU sends the same buffer at every start: when {@code current} maps exactly that, it
     * is returned as it is, so the regions the device holds stay mapped.
     *
     * @throws ProtocolError (rejected) naming what does not fit
     */
    static InflightBuffer map(int fd, long mmapSize, long mmapOffset, int numQueues, int queueSize,
            InflightBuffer current) {
        long expected = InflightDescriptor.bufferBytes(numQueues, queueSize);
        if (mmapSize != expected) {
            throw ProtocolError.rejected("SET_INFLIGHT_FD mmap_size " + Long.toUnsignedString(mmapSize) + ", but "
                    + numQueues + " queue(s) of " + queueSize + " take " + expected + " bytes");
        }
        if (mmapOffset < 0 || (mmapOffset & (Linux.PAGE_SIZE - 1)) != 0) {
            throw ProtocolError.rejected("SET_INFLIGHT_FD mmap_offset " + Long.toUnsignedString(mmapOffset)
                    + " is not a page-aligned file offset");
        }
        Descriptors.regularFile(fd); // what it is: a regular file or memfd (its size is read below)
        // Shared memory only, as the buffers GET_INFLIGHT_FD hands out: on hugetlbfs a page the
        // frontend punched out (F_SEAL_SHRINK does not stop a hole) faults with an empty pool.
        long type = Descriptors.fileSystemType(fd);
        if (type != Descriptors.TMPFS_MAGIC) {
            throw ProtocolError.rejected(String.format("SET_INFLIGHT_FD buffer is a file on a file system of type 0x%x%s,"
                    + " not a shared-memory memfd: only buffers from GET_INFLIGHT_FD are taken", type,
                    type == Descriptors.HUGETLBFS_MAGIC ? " (hugetlbfs)" : ""));
        }
        // The seal first, the size after (as in LogArea.check): a size read before the seal could
        // be cut short in between by a frontend that seals only then, and a store would fault.
        int seals = Native.libc().fcntl(fd, F_GET_SEALS, 0);
        if (seals == -1 || (seals & F_SEAL_SHRINK) == 0) {
            throw ProtocolError.rejected("SET_INFLIGHT_FD buffer is not sealed against shrinking (seals "
                    + (seals == -1 ? "unsupported" : "0x" + Integer.toHexString(seals))
                    + "); it could be cut short under this process: only buffers from GET_INFLIGHT_FD are taken");
        }
        Descriptors.RegularFile file = Descriptors.regularFile(fd);
        long fileSize = file.sizeBytes();
        if (mmapOffset > fileSize || mmapSize > fileSize - mmapOffset) {
            throw ProtocolError.rejected("SET_INFLIGHT_FD range [" + mmapOffset + ", +" + mmapSize
                    + ") runs past the end of its file (" + fileSize + " bytes)");
        }
        if (current != null && current.file.sameFile(file) && current.mmapOffset == mmapOffset
                && current.regions.length == numQueues && current.queueSize == queueSize) {
            return current;
        }
        Mapping mapping;
        try {
            // Guarded: a bug that strays outside the buffer faults at once instead of writing
            // into whatever lies next to it.
            mapping = Mapping.map(fd, mmapOffset, mmapSize, false, true);
        } catch (NativeException e) {
            throw ProtocolError.rejected("SET_INFLIGHT_FD buffer cannot be mapped: " + e.getMessage());
        }
        return new InflightBuffer(mapping, numQueues, queueSize, file, mmapOffset);
    }

    /** Queues the buffer has a region for. */
    int numQueues() {
        return regions.length;
    }

    /** The queue size the frontend announced: each region has this many entries. */
    int queueSize() {
        return queueSize;
    }

    /** Queue {@code q}'s region. */
    InflightRegion region(int q) {
        return regions[q];
    }

    @Override
    public void close() {
        mapping.close();
    }

    @Override
    public String toString() {
        return regions.length + " queue(s) of " + queueSize + " in " + mapping;
    }
}
