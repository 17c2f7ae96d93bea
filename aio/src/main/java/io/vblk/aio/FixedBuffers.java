package io.vblk.aio;

import java.util.Arrays;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * Host memory registered with one io_uring as fixed buffers (IORING_REGISTER_BUFFERS), and the
 * per-transfer lookup that decides whether a one-segment transfer may go as READ_FIXED or
 * WRITE_FIXED: its buffer must lie wholly inside one registered buffer.
 *
 * <p>Why: a plain READ or WRITE makes the kernel pin and import the user pages of every
 * operation (get_user_pages, a page-table walk and a reference per page) and drop them when it
 * completes; a fixed one uses the pages pinned once at registration. fio's {@code fixedbufs=1}
 * gained 10-35% IOPS on this machine's disk at depth 128 for that alone.
 *
 * <p>The kernel's limits shape the table: each registered buffer is at most 1 GiB, so a range
 * is split into pieces of at most {@link IoUringDescriptor#MAX_REGISTERED_BUFFER_BYTES}, and a
 * ring holds at most {@link IoUringDescriptor#MAX_REGISTERED_BUFFERS} of them. The pieces are
 * kept sorted by address, and their registration index is their position, so the lookup is a
 * binary search over two primitive arrays: no allocation, no lock.
 *
 * <p>Registration pins every page of the ranges (FOLL_LONGTERM: resident, unmovable, outside
 * ballooning) until {@link #unregister(int)} or the ring closes. Whether that is worth it for a
 * given table is the caller's policy ({@link FixedBufferMode}). A kernel that refuses (a
 * file-backed MAP_SHARED mapping of a disk filesystem: EFAULT; the memlock limit of a user
 * without CAP_IPC_LOCK: ENOMEM; EOPNOTSUPP on older kernels for some mappings) leaves the table
 * empty, and transfers go unregistered as before; {@link #toString()} says why.
 *
 * <p>Not thread-safe: registration and lookups belong to the back end's submitting thread.
 */
final class FixedBuffers {
    private static final long[] NONE = new long[0];

    /** Start addresses of the registered pieces, ascending; index = registration index. */
    private long[] starts = NONE;
    /** One past the last byte of each piece. */
    private long[] ends = NONE;
    /** Pieces registered (0: none, every lookup misses). */
    private int count;
    /** Whether the kernel holds a buffer table for the ring (registered and not yet dropped). */
    private boolean kernelTable;
    private long registeredBytes;
    private String state = "none registered";

    /**
     * The registration index of the buffer holding all of {@code [address, address + length)},
     * or -1 (the transfer then goes unregistered). {@code length} is positive.
     */
    int indexOf(long address, long length) {
        // The last piece starting at or below address (user addresses are positive: a negative
        // or zero address matches nothing).
        int lo = 0;
        int hi = count - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            if (starts[mid] <= address) {
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        if (hi < 0) {
            return -1;
        }
        long end = ends[hi];
        // room = end - address, positive when address lies in the piece; no sum that could wrap.
        return address < end && length <= end - address ? hi : -1;
    }

    /** Pieces registered now. */
    int count() {
        return count;
    }

    /** Bytes registered now. */
    long registeredBytes() {
        return registeredBytes;
    }

    /**
     * Replaces the ring's registered buffers with the ranges {@code addresses[i], lengths[i]}
     * (each split into pieces of at most 1 GiB). Returns the number of pieces registered, or
     * {@code -errno} when the kernel refused (or the ranges need more pieces than a ring holds:
     * {@code -EINVAL}); the table is then empty. The previous table is dropped first in every
     * case, an exception too. The caller makes sure no queued SQE names a buffer index.
     *
     * @throws IllegalArgumentException for a non-positive address or length, a range that wraps,
     *         or arrays of different lengths (a caller's bug, not a refusal)
     */
    int register(int ringFd, long[] addresses, long[] lengths) {
        // The old table goes first, whatever happens next: a table must never outlive the
        // mapping it pinned (new memory at the same addresses would be read into the old pages).
        unregister(ringFd);
        if (addresses.length != lengths.length) {
            throw new IllegalArgumentException("fixed buffers: " + addresses.length + " addresses, " + lengths.length + " lengths");
        }
        long pieces = 0;
        for (int i = 0; i < addresses.length; i++) {
            long a = addresses[i];
            long n = lengths[i];
            if (a <= 0 || n <= 0 || a > Long.MAX_VALUE - n) {
                throw new IllegalArgumentException(String.format("fixed buffers: bad range %d: address 0x%x length %d", i, a, n));
            }
            pieces += (n + IoUringDescriptor.MAX_REGISTERED_BUFFER_BYTES - 1) / IoUringDescriptor.MAX_REGISTERED_BUFFER_BYTES;
        }
        if (pieces == 0) {
            state = "none registered (no ranges)";
            return 0;
        }
        if (pieces > IoUringDescriptor.MAX_REGISTERED_BUFFERS) {
            state = "not registered: " + pieces + " pieces of at most 1 GiB, the ring holds " + IoUringDescriptor.MAX_REGISTERED_BUFFERS;
            return -Errno.EINVAL;
        }
        int n = (int) pieces;
        long[] newStarts = new long[n];
        long[] newEnds = new long[n];
        split(addresses, lengths, newStarts, newEnds);
        NativeBuffer iovecs;
        try {
            iovecs = new NativeBuffer(n * IovecDescriptor.LENGTH);
        } catch (OutOfMemoryError e) {
            // Direct memory, which every disk of the JVM shares, is used up (this may run on an
            // I/O thread, at a memory-table change): a refusal like any other, and transfers go
            // unregistered, rather than an error out of the thread's round.
            state = "not registered: no direct memory for " + n + " iovecs (" + e.getMessage() + ")";
            return -Errno.ENOMEM;
        }
        long bytes = 0;
        for (int i = 0; i < n; i++) {
            iovecs.buffer().putLong(i * IovecDescriptor.LENGTH + IovecDescriptor.BASE_OFFSET, newStarts[i]);
            iovecs.buffer().putLong(i * IovecDescriptor.LENGTH + IovecDescriptor.LENGTH_OFFSET, newEnds[i] - newStarts[i]);
            bytes += newEnds[i] - newStarts[i];
        }
        long rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.REGISTER_BUFFERS, iovecs.address(), n, 0);
        // The kernel reads the iovecs during the call: keep them from being freed under it.
        java.lang.ref.Reference.reachabilityFence(iovecs);
        if (rc < 0) {
            state = "refused by the kernel: " + Errno.describe((int) -rc) + " (" + n + " pieces, " + bytes + " bytes)";
            return (int) rc;
        }
        kernelTable = true;
        starts = newStarts;
        ends = newEnds;
        registeredBytes = bytes;
        count = n;
        state = n + " buffer(s), " + bytes + " bytes";
        return n;
    }

    /** Cuts the ranges into pieces of at most 1 GiB, sorted by address. */
    private static void split(long[] addresses, long[] lengths, long[] outStarts, long[] outEnds) {
        long[][] pieces = new long[outStarts.length][];
        int k = 0;
        for (int i = 0; i < addresses.length; i++) {
            long a = addresses[i];
            long left = lengths[i];
            while (left > 0) {
                long piece = Math.min(left, IoUringDescriptor.MAX_REGISTERED_BUFFER_BYTES);
                pieces[k++] = new long[] {a, a + piece};
                a += piece;
                left -= piece;
            }
        }
        Arrays.sort(pieces, (x, y) -> Long.compare(x[0], y[0]));
        for (int i = 0; i < pieces.length; i++) {
            outStarts[i] = pieces[i][0];
            outEnds[i] = pieces[i][1];
        }
    }

    /**
     * Drops the registration: lookups miss from now on, and the kernel unpins the pages once no
     * operation still uses them.
     */
    void unregister(int ringFd) {
        count = 0;
        registeredBytes = 0;
        starts = NONE;
        ends = NONE;
        if (kernelTable) {
            kernelTable = false;
            Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.UNREGISTER_BUFFERS, 0, 0, 0);
        }
        state = "none registered";
    }

    /**
     * Lookups miss from now on, and the kernel's table stays until {@link #unregister(int)}:
     * another thread than the ring's owner is replacing it ({@link IoUringBackend}).
     */
    void suspend() {
        count = 0;
        starts = NONE;
        ends = NONE;
    }

    /** What is registered, or why nothing is. */
    @Override
    public String toString() {
        return state;
    }
}
