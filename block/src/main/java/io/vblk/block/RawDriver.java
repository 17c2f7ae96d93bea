package io.vblk.block;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.Image;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;

/**
 * The {@code raw} format: the virtual disk is the back end's disk, byte for byte (a file, or a
 * network disk: {@code nbd}, {@code rbd}, whose back ends talk to a server). Every request is one
 * back-end operation with the request's tag as user data, so this driver adds one (inlinable,
 * monomorphic per thread) call per operation and nothing else: today's path.
 */
public final class RawDriver implements BlockDriver {
    private final String format;
    private final IoBackend backend;
    /** Volatile: {@link #resize} runs on the I/O thread, {@link #sizeBytes()} is read anywhere. */
    private volatile long sizeBytes;
    private final boolean readOnly;
    private final boolean ownsBackend;
    private Image ownedImage;
    private Resizer resizer;
    /** Whether a migration's hand-over flushes the disk (a network disk: see {@link #flushAtHandOver}). */
    private boolean flushAtHandOver;
    private long handOverResult;

    private static final long HAND_OVER_TAG = 0x4841_4e44_4f56_4552L;
    private static final long HAND_OVER_TIMEOUT_NS = 120_000_000_000L;

    /** What changes the size of a raw driver's disk (the file's ftruncate, {@code rbd_resize}). */
    @FunctionalInterface
    public interface Resizer {
        /** Gives the disk {@code newSizeBytes} bytes, or throws with the reason. */
        void resize(long newSizeBytes) throws java.io.IOException;
    }

    /**
     * A raw driver over {@code backend}, whose image holds {@code sizeBytes} bytes. With
     * {@code ownsBackend} closing the driver closes the back end.
     */
    public RawDriver(IoBackend backend, long sizeBytes, boolean readOnly, boolean ownsBackend) {
        this("raw", backend, sizeBytes, readOnly, ownsBackend);
    }

    /** The same, under the name of the back end's disk ({@code nbd}, {@code rbd}). */
    public RawDriver(String format, IoBackend backend, long sizeBytes, boolean readOnly, boolean ownsBackend) {
        this.format = format;
        this.backend = backend;
        this.sizeBytes = sizeBytes;
        this.readOnly = readOnly;
        this.ownsBackend = ownsBackend;
    }

    /**
     * A read-only or writable raw driver that owns both {@code backend} and {@code image}: closing
     * it closes them (a backing file opened by another driver).
     */
    public static RawDriver owning(IoBackend backend, Image image) {
        RawDriver d = new RawDriver(backend, image.sizeBytes(), image.readOnly(), true);
        d.ownedImage = image;
        return d.resizableBy(image::resize);
    }

    /** The image this driver owns (a backing file), if it owns one. */
    @Override
    public java.util.List<Image> files() {
        return ownedImage == null ? java.util.List.of() : java.util.List.of(ownedImage);
    }

    /**
     * Makes {@link #inactivate} (a migration's source handing over, its queues drained) flush
     * the disk through the back end, as QEMU's inactivation does: a network disk's server
     * (NBD_CMD_FLUSH) or librbd's cache when an address turned it on; returns this driver.
     */
    public RawDriver flushAtHandOver() {
        flushAtHandOver = true;
        return this;
    }

    /**
     * The hand-over's flush (see {@link #flushAtHandOver}), synchronously on the I/O thread with
     * nothing else in flight; a raw disk has no other state to hand over, so nothing changes:
     * returns false.
     *
     * @throws java.io.IOException when the flush fails or does not complete in 120 s
     */
    @Override
    public boolean inactivate() throws java.io.IOException {
        if (!flushAtHandOver || readOnly) {
            return false;
        }
        int rc = backend.prepareFlush(HAND_OVER_TAG);
        if (rc < 0) {
            throw new java.io.IOException(this + ": the flush before the hand-over was refused: "
                    + io.vblk.sys.Errno.describe(-rc));
        }
        handOverResult = Long.MIN_VALUE;
        backend.submit();
        long deadline = System.nanoTime() + HAND_OVER_TIMEOUT_NS;
        while (true) {
            backend.poll((tag, res) -> {
                if (tag == HAND_OVER_TAG) {
                    handOverResult = res;
                }
            }, 16);
            if (handOverResult != Long.MIN_VALUE) {
                break;
            }
            if (System.nanoTime() - deadline > 0) {
                throw new java.io.IOException(this + ": the flush before the hand-over did not complete in 120 s");
            }
            if (backend.pendingSubmit() > 0) {
                backend.submit();
            }
            if (backend.awaitCompletions(100) > 0) {
                backend.acknowledgeCompletions();
            }
        }
        if (handOverResult < 0) {
            throw new java.io.IOException(this + ": the flush before the hand-over failed: "
                    + io.vblk.sys.Errno.describe((int) -handOverResult));
        }
        return false;
    }

    /** Lets {@link #resize} change the disk's size through {@code value}; returns this driver. */
    public RawDriver resizableBy(Resizer value) {
        resizer = value;
        return this;
    }

    /**
     * Online resize: the disk underneath takes the new size (a file grows or shrinks, an RBD
     * image is resized), then this driver reports it.
     *
     * @throws UnsupportedOperationException when nothing can resize this disk (an NBD export)
     */
    @Override
    public void resize(long newSizeBytes) throws java.io.IOException {
        if (resizer == null) {
            BlockDriver.super.resize(newSizeBytes);
        }
        try {
            resizer.resize(newSizeBytes);
        } catch (IllegalStateException | io.vblk.sys.NativeException e) {
            throw new java.io.IOException(e.getMessage(), e);
        }
        sizeBytes = newSizeBytes;
    }

    /** The back end underneath (tests and the engine's counters). */
    public IoBackend backend() {
        return backend;
    }

    @Override
    public int registerBuffers(long[] addresses, long[] lengths) {
        return backend.registerBuffers(addresses, lengths);
    }

    @Override
    public void unregisterBuffers() {
        backend.unregisterBuffers();
    }

    @Override
    public String bufferRegistration() {
        return backend.bufferRegistration();
    }

    @Override
    public String format() {
        return format;
    }

    @Override
    public long sizeBytes() {
        return sizeBytes;
    }

    @Override
    public boolean readOnly() {
        return readOnly;
    }

    @Override
    public int depth() {
        return backend.depth();
    }

    @Override
    public int freeSlots() {
        return backend.freeSlots();
    }

    @Override
    public int read(long offset, IoVector buffers, long tag) {
        return backend.prepareRead(offset, buffers, tag);
    }

    @Override
    public int write(long offset, IoVector buffers, long tag) {
        return backend.prepareWrite(offset, buffers, tag);
    }

    @Override
    public int flush(long tag) {
        return backend.prepareFlush(tag);
    }

    @Override
    public int discard(long offset, long length, long tag) {
        return backend.prepareDiscard(offset, length, tag);
    }

    @Override
    public int writeZeroes(long offset, long length, boolean mayUnmap, long tag) {
        return backend.prepareWriteZeroes(offset, length, mayUnmap, tag);
    }

    @Override
    public int submit() {
        return backend.submit();
    }

    @Override
    public int pendingSubmit() {
        return backend.pendingSubmit();
    }

    @Override
    public int inFlight() {
        return backend.inFlight();
    }

    @Override
    public int reclaimLostSlots() {
        return backend.reclaimLostSlots();
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        return backend.poll(sink, max);
    }

    @Override
    public boolean reapOnSubmittingThread() {
        return backend.reapOnSubmittingThread();
    }

    @Override
    public boolean completionsReady() {
        return backend.completionsReady();
    }

    @Override
    public int completionSources() {
        return backend.completionEvent() == null ? 0 : 1;
    }

    @Override
    public int completionFd(int i) {
        return backend.completionEvent().fd();
    }

    @Override
    public void acknowledge(int i) {
        backend.acknowledgeCompletions();
    }

    @Override
    public boolean rearmCompletions() {
        return backend.rearmCompletions();
    }

    @Override
    public boolean singleIssuer() {
        return backend.singleIssuer();
    }

    @Override
    public boolean registrationPending() {
        return backend.registrationPending();
    }

    /** The back end's own ring, when it has one that can (one back end: a raw image). */
    @Override
    public io.vblk.aio.RingSleep sleepInRing() {
        return backend.sleepInRing();
    }

    @Override
    public int awaitCompletions(int timeoutMs) {
        return backend.awaitCompletions(timeoutMs);
    }

    @Override
    public long drain(CompletionSink sink) {
        return backend.drain(sink);
    }

    @Override
    public boolean closedDrained() {
        return backend.closedDrained();
    }

    @Override
    public void whenDrained(Runnable action) {
        backend.whenDrained(action);
    }

    @Override
    public void close() {
        closeWithin(Long.MAX_VALUE);
    }

    @Override
    public void closeWithin(long timeoutNs) {
        boolean drained = false;
        try {
            if (ownsBackend) {
                backend.closeWithin(timeoutNs);
            }
            drained = !ownsBackend || backend.closedDrained();
        } finally {
            if (ownedImage != null) {
                // Released at once only when the back end confirmed that nothing of it is still
                // with the kernel; otherwise the locks go with the descriptor when the kernel lets
                // go of it, so that QEMU cannot open the image for writing while stale writes land.
                if (drained) {
                    ImageLocks.release(ownedImage);
                }
                ownedImage.close();
            }
        }
    }

    @Override
    public String toString() {
        return format + "[" + backend + "]";
    }
}
