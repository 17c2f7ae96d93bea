package io.vblk.block.qcow2;

import java.io.IOException;

import org.agrona.UnsafeApi;

import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.block.NetworkDisk;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * A qcow2 image whose bytes lie on a network disk: an NBD export (e.g. {@code qemu-nbd -f raw}
 * of a qcow2 file, or an nbdkit disk) or an RBD image (e.g. {@code rbd import} of a qcow2 file).
 * Everything, the synchronous steps included, goes through the one back end the driver uses, so
 * no local file is involved.
 *
 * <p>Where clusters are allocated: a file grows at its end, but a network disk has a size of its
 * own, usually larger than the image it holds; so the driver allocates after the last cluster
 * with a non-zero refcount ({@link Qcow2Image#allocationEnd}), as far as the disk's end. An RBD
 * image then grows with {@code rbd_resize} (as QEMU's rbd driver does); an NBD export cannot
 * grow, and an allocating write past its end fails with ENOSPC.
 */
final class NetworkHost extends Qcow2Host {
    private static final long SYNC_TAG = 0x5157_4649L;
    private static final int TIMEOUT_MS = 120_000;

    private final NetworkDisk disk;
    private final boolean readOnly;
    private IoBackend io;
    private final IoVector vec = new IoVector(1);
    private long result;
    private boolean closed;

    NetworkHost(NetworkDisk disk, boolean readOnly) {
        this.disk = disk;
        this.readOnly = readOnly || disk.readOnly();
    }

    @Override
    String name() {
        return disk.address();
    }

    @Override
    long sizeBytes() {
        return disk.sizeBytes();
    }

    @Override
    boolean readOnly() {
        return readOnly;
    }

    @Override
    int offsetAlignment() {
        return disk.blockSizeBytes();
    }

    @Override
    boolean file() {
        return false;
    }

    @Override
    boolean fixedSize() {
        return "nbd".equals(disk.format());
    }

    @Override
    IoBackend openBackend(int depth) {
        if (io != null) {
            throw new IllegalStateException("the back end of " + disk.address() + " is open already");
        }
        io = disk.openBackend(depth);
        return io;
    }

    /** Opens a read-only back end for a look at the header ({@link Qcow2#virtualSize(NetworkDisk)}). */
    void openProbe() {
        if (io != null) {
            throw new IllegalStateException("the back end of " + disk.address() + " is open already");
        }
        io = disk.openProbe();
    }

    @Override
    void read(long position, NativeBuffer dst, int length) throws IOException {
        UnsafeApi.setMemory(dst.address(), length, (byte) 0);
        long size = disk.sizeBytes();
        if (position >= size) {
            return;
        }
        int n = (int) Math.min(length, size - position);
        int unit = offsetAlignment();
        n = n / unit * unit; // a tail shorter than the block size is not addressable: zeros
        if (n > 0) {
            transfer(false, position, dst, n);
        }
    }

    @Override
    void writeDurably(long position, NativeBuffer src, int length) throws IOException {
        transfer(true, position, src, length);
        try {
            complete(io.prepareFlush(SYNC_TAG), "flush");
        } catch (NotWritten e) {
            throw new IOException(e.getMessage(), e); // the write reached the server: not durable, not undone
        }
    }

    /**
     * A flush through the back end (NBD_CMD_FLUSH, rbd_aio_flush): a migration's hand-over
     * makes every completed write durable on the server before the destination takes the image
     * over. I/O thread, nothing else in flight (after the driver's quiesce).
     */
    @Override
    int syncData() {
        if (readOnly || io == null) {
            return 0;
        }
        try {
            complete(io.prepareFlush(SYNC_TAG), "flush");
            return 0;
        } catch (IOException e) {
            System.err.println("vblk: qcow2 " + disk.address() + ": " + e.getMessage());
            return -Errno.EIO;
        }
    }

    @Override
    int extendTo(long newSizeBytes) {
        if (newSizeBytes <= disk.sizeBytes()) {
            return 0;
        }
        if (readOnly) {
            return -Errno.EROFS;
        }
        try {
            disk.resizeBackend(io, newSizeBytes);
            return 0;
        } catch (UnsupportedOperationException e) {
            return -Errno.ENOSPC; // an NBD export's size is the server's
        } catch (IOException e) {
            return -Errno.EIO;
        }
    }

    @Override
    void truncate(long sizeBytes) {
        // A network disk keeps its size: the unused tail stays (QEMU does not shrink it either).
    }

    /** Grows the disk itself (an RBD image) for a qcow2 resize whose metadata needs room. */
    NetworkDisk disk() {
        return disk;
    }

    private void transfer(boolean write, long position, NativeBuffer buffer, int length) throws IOException {
        if (io == null) {
            throw new IllegalStateException("the back end of " + disk.address() + " is not open");
        }
        vec.clear();
        vec.add(buffer.address(), length);
        int rc = write ? io.prepareWrite(position, vec, SYNC_TAG) : io.prepareRead(position, vec, SYNC_TAG);
        long r = complete(rc, (write ? "write of " : "read of ") + length + " bytes at " + position);
        if (r != length) {
            throw new IOException(disk.address() + ": short " + (write ? "write" : "read") + " at " + position + ": "
                    + r + " of " + length + " bytes");
        }
    }

    /**
     * Submits the one prepared operation and waits for its completion. Only used when nothing
     * else is in flight on the back end (open, the first request, close, a resize between
     * rounds), so every completion seen is this one.
     */
    private long complete(int prepared, String what) throws IOException {
        if (prepared < 0) {
            // Refused before anything was sent: the disk is as it was.
            throw new NotWritten(disk.address() + ": " + what + " refused: " + Errno.describe(-prepared));
        }
        result = Long.MIN_VALUE;
        io.submit();
        long deadline = System.nanoTime() + TIMEOUT_MS * 1_000_000L;
        while (true) {
            io.poll((tag, res) -> {
                if (tag == SYNC_TAG) {
                    result = res;
                }
            }, 16);
            if (result != Long.MIN_VALUE) {
                break;
            }
            if (System.nanoTime() > deadline) {
                throw new IOException(disk.address() + ": " + what + " did not complete in " + TIMEOUT_MS / 1000 + " s");
            }
            if (io.pendingSubmit() > 0) {
                io.submit();
            }
            if (io.awaitCompletions(100) > 0) {
                io.acknowledgeCompletions();
            }
        }
        if (result < 0) {
            throw new IOException(disk.address() + ": " + what + " failed: " + Errno.describe((int) -result));
        }
        return result;
    }

    @Override
    public void close() {
        closeWithin(Long.MAX_VALUE);
    }

    /**
     * Passes the driver's deadline to the back end ({@link IoBackend#closeWithin}): its drain
     * and its final FLUSH (an NBD disk's) wait at most that long for a silent server, not the
     * back end's whole close bound.
     */
    @Override
    void closeWithin(long timeoutNs) {
        if (closed) {
            return;
        }
        closed = true;
        if (io != null) {
            io.closeWithin(timeoutNs);
        }
    }

    @Override
    public String toString() {
        return disk.address();
    }
}
