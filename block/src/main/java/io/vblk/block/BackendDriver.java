package io.vblk.block;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.block.nbd.NbdBackend;
import io.vblk.sys.EventFd;

/**
 * A block driver whose disk is one {@link IoBackend} byte for byte, under a format name: the
 * network disks ({@code nbd}, {@code rbd}), whose back ends talk to a server instead of a file.
 * One back-end operation per request, the request's tag as user data; the back end's eventfd is
 * the completion source. Closing the driver closes the back end.
 */
public final class BackendDriver implements BlockDriver {
    private final String format;
    private final IoBackend backend;
    private final long sizeBytes;
    private final boolean readOnly;

    /** A driver named {@code format} over {@code backend}, a disk of {@code sizeBytes}. */
    public BackendDriver(String format, IoBackend backend, long sizeBytes, boolean readOnly) {
        this.format = format;
        this.backend = backend;
        this.sizeBytes = sizeBytes;
        this.readOnly = readOnly;
    }

    /** The back end underneath. */
    public IoBackend backend() {
        return backend;
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
    public int poll(CompletionSink sink, int max) {
        return backend.poll(sink, max);
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
        if (backend instanceof NbdBackend) {
            // Its source is an epoll descriptor over its sockets: nothing to read, only noted.
            ((NbdBackend) backend).acknowledge();
            return;
        }
        EventFd e = backend.completionEvent();
        if (e != null) {
            e.read();
        }
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
    public void close() {
        backend.close();
    }

    @Override
    public String toString() {
        return format + "[" + backend + "]";
    }
}
