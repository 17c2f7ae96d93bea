package io.vblk.block.qcow2;

import io.vblk.block.ImageActivation;
import io.vblk.block.ImageLocks;
import io.vblk.sys.ImageLock.Locking;

import java.io.IOException;
import java.nio.file.Path;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.PosixFile;

/**
 * A qcow2 image in a local file: per-request I/O through an aio back end of the chosen kind
 * (io_uring, linux-aio, threads), the synchronous steps with ordinary positional file I/O.
 *
 * <p><b>Never by path once open.</b> QEMU's image locks are held on the descriptor opened at
 * open; the path may name another file a moment later (renamed, replaced, another VM's image
 * that QEMU has locked). So the synchronous steps (metadata reads, write-through, truncate, the
 * stored size) go through a second, buffered descriptor opened from {@code /proc/self/fd/N} of
 * the locked one: the same inode whatever the path names by then, and no O_DIRECT alignment
 * rules for metadata of any length. It is a {@link PosixFile} (use-counted, no close by
 * interrupt as a shared {@code FileChannel} would suffer).
 */
final class FileHost extends Qcow2Host {
    private final Path path;
    private final Image image;
    private final BackendKind kind;
    /** The buffered descriptor on the locked image's inode for the synchronous steps; null for a portable image. */
    private final PosixFile sync;
    /** The image's locks: the writer's (or a reader's), or the inactive set until {@link #activateLocks}. */
    private final ImageActivation activation;
    private IoBackend io;
    private boolean closed;

    FileHost(Path path, BackendKind kind, boolean readOnly, boolean direct) {
        this(path, kind, readOnly, direct, Locking.ON, false);
    }

    FileHost(Path path, BackendKind kind, boolean readOnly, boolean direct, Locking locking) {
        this(path, kind, readOnly, direct, locking, false);
    }

    /**
     * Opens the file and takes QEMU's image locks on it at once (a reader's use when read-only):
     * nothing is read into a cache or written (not even the rounding of the file to whole
     * clusters) before the check, and a refused image is closed again. A writable image opened
     * {@code incoming} (a migration's destination) takes the inactive set instead of the
     * writer's locks: a reader that lets the source's backend go on writing.
     */
    FileHost(Path path, BackendKind kind, boolean readOnly, boolean direct, Locking locking, boolean incoming) {
        this(path, kind, readOnly, direct, locking, incoming, null);
    }

    /** As above, the file opened only if it resolves beneath {@code beneath} (a backing directory; null: as named). */
    FileHost(Path path, BackendKind kind, boolean readOnly, boolean direct, Locking locking, boolean incoming, Path beneath) {
        this.path = path;
        this.kind = kind;
        Image opened = Image.open(path, ImageOptions.defaults().readOnly(readOnly).direct(direct).beneath(beneath));
        try {
            this.activation = ImageActivation.lock(opened, locking, incoming, System.err::println);
        } catch (RuntimeException | Error e) {
            opened.close();
            throw e;
        }
        this.image = opened;
        PosixFile second = null;
        if (!image.portable()) {
            try {
                second = PosixFile.open(Path.of("/proc/self/fd/" + image.fd()), image.readOnly(), false);
            } catch (RuntimeException | Error e) {
                ImageLocks.release(image);
                image.close();
                throw e;
            }
        }
        this.sync = second;
    }

    /** The synchronous steps' descriptor; a portable image (no descriptor, no locks) has none. */
    private PosixFile sync() throws IOException {
        if (sync == null) {
            throw new IOException("no descriptor for the synchronous steps of " + path + " (portable image)");
        }
        return sync;
    }

    private IOException failed(String call, long rc, long position) {
        return new IOException(call + " of " + path + " at " + position + ": " + Errno.describe((int) -rc));
    }

    @Override
    String name() {
        return path.toString();
    }

    @Override
    Image image() {
        return image;
    }

    @Override
    long sizeBytes() {
        return image.sizeBytes();
    }

    @Override
    long storedBytes() throws IOException {
        try {
            return sync().sizeBytes();
        } catch (IllegalStateException e) {
            throw new IOException(e.getMessage(), e);
        }
    }

    @Override
    boolean readOnly() {
        return image.readOnly();
    }

    @Override
    int offsetAlignment() {
        return image.offsetAlignment();
    }

    @Override
    boolean file() {
        return true;
    }

    @Override
    IoBackend openBackend(int depth) {
        if (io != null) {
            throw new IllegalStateException("the back end of " + path + " is open already");
        }
        io = IoBackends.open(kind, image, BackendOptions.depth(depth));
        return io;
    }

    /**
     * pread or pwrite of {@code length} bytes at {@code position}, again after EINTR and short
     * counts; a read stops at the end of the file, a write that makes no progress fails.
     */
    private void transfer(PosixFile f, boolean write, long position, NativeBuffer b, int length) throws IOException {
        long done = 0;
        while (done < length) {
            long n = write ? f.pwrite(b.address() + done, length - done, position + done)
                    : f.pread(b.address() + done, length - done, position + done);
            if (n == -Errno.EINTR) {
                continue;
            }
            if (n < 0) {
                IOException e = failed(write ? "pwrite" : "pread", n, position + done);
                throw write && done == 0 ? new NotWritten(e.getMessage()) : e;
            }
            if (n == 0) {
                if (write) {
                    String m = "pwrite of " + path + " at " + (position + done) + " wrote nothing";
                    throw done == 0 ? new NotWritten(m) : new IOException(m);
                }
                return;
            }
            done += n;
        }
    }

    @Override
    void read(long position, NativeBuffer dst, int length) throws IOException {
        transfer(sync(), false, position, dst, length); // short at the end of the file: the rest of dst is left as it is
    }

    @Override
    void writeDurably(long position, NativeBuffer src, int length) throws IOException {
        PosixFile f = sync();
        transfer(f, true, position, src, length);
        int rc = f.fdatasync(); // the inode's: the same file as the locked descriptor's
        if (rc < 0) {
            throw failed("fdatasync", rc, position);
        }
    }

    /** fdatasync(2) of the image (a device's sync before a hand-over); 0 or {@code -errno}. */
    int fdatasync() {
        return sync == null ? -Errno.EINVAL : sync.fdatasync();
    }

    @Override
    int syncData() {
        return sync == null ? image.fdatasync() : sync.fdatasync();
    }

    @Override
    void activateLocks() {
        activation.activate();
    }

    @Override
    void inactivateLocks() {
        activation.inactivate();
    }

    @Override
    void refreshSize() {
        if (!image.readOnly()) {
            image.refreshSize();
        }
    }

    @Override
    int extendTo(long newSizeBytes) {
        if (newSizeBytes <= image.sizeBytes()) {
            return 0;
        }
        return image.extendTo(newSizeBytes);
    }

    @Override
    void truncate(long sizeBytes) throws IOException {
        PosixFile f = sync();
        if (storedBytes() > sizeBytes) {
            int rc = f.ftruncate(sizeBytes);
            if (rc < 0) {
                throw failed("ftruncate", rc, sizeBytes);
            }
        }
    }

    @Override
    public void close() {
        closeWithin(Long.MAX_VALUE);
    }

    @Override
    void closeWithin(long timeoutNs) {
        if (closed) {
            return;
        }
        closed = true;
        boolean drained = false;
        try {
            if (io != null) {
                io.closeWithin(timeoutNs);
            }
            drained = io == null || io.closedDrained();
        } finally {
            if (sync != null) {
                sync.close();
            }
            if (drained) {
                ImageLocks.release(image); // now, not when the ring's teardown lets go of the file
            }
            // Else the back end left operations with the kernel (a stranded slot, a stuck
            // fdatasync): the locks stay on the descriptor until the kernel lets go of it, so
            // that nobody opens the image for writing while stale writes may still land.
            image.close();
        }
    }

    @Override
    public String toString() {
        return path.toString();
    }
}
