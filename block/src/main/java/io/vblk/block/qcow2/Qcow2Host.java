package io.vblk.block.qcow2;

import java.io.IOException;

import io.vblk.aio.IoBackend;
import io.vblk.sys.NativeBuffer;

/**
 * What holds the bytes of one qcow2 image: a local file ({@link FileHost}) or a network disk, an
 * NBD export or an RBD image ({@link NetworkHost}). Every per-request access (L2 tables, data,
 * refcount blocks) goes through the {@link IoBackend} the host opens; the few synchronous steps
 * (the metadata at open and at the first request, the header sector, handing back reserved
 * clusters at close, a resize) go through the methods here, never on the data path.
 */
abstract class Qcow2Host implements AutoCloseable {
    /** A name for messages (the file's path or the disk's address). */
    abstract String name();

    /** The bytes the back end addresses (cheap: no system call). */
    abstract long sizeBytes();

    /**
     * The bytes the host holds, asked afresh (a file another process grew since the back end
     * learned its size); at open and at the first request only.
     */
    long storedBytes() throws IOException {
        return sizeBytes();
    }

    /** Whether the host refuses changes. */
    abstract boolean readOnly();

    /** The alignment of offsets and lengths the back end needs (O_DIRECT, the NBD block size). */
    abstract int offsetAlignment();

    /** Whether the host is a local file (grown and truncated by the driver as the image grows). */
    abstract boolean file();

    /** Whether the host can never hold more than it does now (an NBD export: the server owns its size). */
    boolean fixedSize() {
        return false;
    }

    /** The local file the host opened, or null (a network disk). */
    io.vblk.aio.Image image() {
        return null;
    }

    /**
     * Takes the writer's locks of an image opened inactive (a migration's destination, or a
     * source taking its image back). Nothing where the host holds no locks of its own.
     *
     * @throws io.vblk.sys.ImageLock.LockedException while another user holds a conflicting lock;
     *         the inactive locks stay
     */
    void activateLocks() {
    }

    /** Drops the writer's locks back to the inactive set (a migration's hand-over). Nothing without locks. */
    void inactivateLocks() {
    }

    /** Makes every write to the host durable (fdatasync of a file); 0 or {@code -errno}. */
    int syncData() {
        return 0;
    }

    /** Learns the host's size afresh (another process grew or shrank the file while the image was inactive). */
    void refreshSize() {
    }

    /** Opens the back end for the driver, once; the host closes it. */
    abstract IoBackend openBackend(int depth);

    /** Reads {@code length} bytes at {@code position} into {@code dst}; bytes past the end read as zeros. */
    abstract void read(long position, NativeBuffer dst, int length) throws IOException;

    /**
     * Writes {@code length} bytes of {@code src} at {@code position} and makes them durable.
     *
     * @throws NotWritten when the host refused the write before any of it reached the image
     *         (the image is as it was)
     * @throws IOException when part or all of it may have reached the image, or reached it and
     *         did not become durable (a failed fdatasync, which also consumed the file's
     *         writeback error): what the disk holds is then unknown
     */
    abstract void writeDurably(long position, NativeBuffer src, int length) throws IOException;

    /**
     * A {@link #writeDurably} failure that left the image as it was: nothing of the write reached
     * it (the first write call failed, or the back end refused to send it).
     */
    static final class NotWritten extends IOException {
        private static final long serialVersionUID = 1L;

        NotWritten(String message) {
            super(message);
        }
    }

    /**
     * Makes sure the host holds at least {@code newSizeBytes} bytes (clusters allocated at the end
     * of the image). 0, or {@code -errno} ({@code -ENOSPC} for a host of fixed size).
     */
    abstract int extendTo(long newSizeBytes);

    /** Drops what lies past {@code sizeBytes} where the host can (a file); others keep their size. */
    abstract void truncate(long sizeBytes) throws IOException;

    /** Closes the back end and whatever the host opened. Idempotent. */
    @Override
    public abstract void close();

    /**
     * As {@link #close()}, the back end's wait for the kernel within {@code timeoutNs} ({@link
     * IoBackend#closeWithin}). By default {@link #close()}.
     */
    void closeWithin(long timeoutNs) {
        close();
    }

    static long roundUp(long v, long to) {
        return (v + to - 1) / to * to;
    }
}
