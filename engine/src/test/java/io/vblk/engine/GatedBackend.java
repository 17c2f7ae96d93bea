package io.vblk.engine;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.EventFd;

/**
 * A real back end whose completions are withheld while the gate is closed, as a slow disk would
 * hold them: the operations run, their results wait in the kernel's completion queue. Tests use
 * it to keep requests in flight for as long as they need (no real device can be told to stall).
 */
final class GatedBackend implements IoBackend {
    private final IoBackend real;
    private volatile boolean open;

    GatedBackend(IoBackend real, boolean open) {
        this.real = real;
        this.open = open;
    }

    /** A factory wrapping each back end {@code real} opens; the last one opened is in {@code last}. */
    static BackendFactory wrap(BackendFactory real, GatedBackend[] last, boolean open) {
        return depth -> {
            GatedBackend b = new GatedBackend(real.open(depth), open);
            last[0] = b;
            return b;
        };
    }

    void open() {
        open = true;
        EventFd e = real.completionEvent();
        if (e != null) {
            e.signal();
        }
    }

    /** Opens ({@code true}) or closes the gate without waking anyone. */
    void set(boolean value) {
        open = value;
    }

    boolean isOpen() {
        return open;
    }

    @Override
    public int depth() {
        return real.depth();
    }

    @Override
    public int freeSlots() {
        return real.freeSlots();
    }

    @Override
    public int prepareRead(long offset, IoVector buffers, long userData) {
        return real.prepareRead(offset, buffers, userData);
    }

    @Override
    public int prepareWrite(long offset, IoVector buffers, long userData) {
        return real.prepareWrite(offset, buffers, userData);
    }

    @Override
    public int prepareFlush(long userData) {
        return real.prepareFlush(userData);
    }

    @Override
    public int prepareDiscard(long offset, long length, long userData) {
        return real.prepareDiscard(offset, length, userData);
    }

    @Override
    public int prepareWriteZeroes(long offset, long length, boolean mayUnmap, long userData) {
        return real.prepareWriteZeroes(offset, length, mayUnmap, userData);
    }

    @Override
    public int submit() {
        return real.submit();
    }

    @Override
    public int pendingSubmit() {
        return real.pendingSubmit();
    }

    @Override
    public int inFlight() {
        return real.inFlight();
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        return open ? real.poll(sink, max) : 0;
    }

    @Override
    public EventFd completionEvent() {
        return real.completionEvent();
    }

    @Override
    public int awaitCompletions(int timeoutMs) {
        return real.awaitCompletions(timeoutMs);
    }

    @Override
    public void close() {
        open = true;
        real.close();
    }
}
