package io.vblk.testkit;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.EventFd;

/**
 * A back end that hands every call to a real one: the base of test seams that change one
 * behaviour of a real back end (withhold completions, fault inside the reap) and forward the rest.
 */
public abstract class ForwardingBackend implements IoBackend {
    /** The back end that does the work. */
    protected final IoBackend real;

    /** Forwards to {@code real}. */
    protected ForwardingBackend(IoBackend real) {
        this.real = real;
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
    public boolean closedDrained() {
        return real.closedDrained();
    }

    /**
     * When the real back end is drained, and only if this one says so too: a seam that reports
     * an undrained close of its own (overriding {@link #closedDrained()}) never runs it.
     */
    @Override
    public void whenDrained(Runnable action) {
        real.whenDrained(() -> {
            if (closedDrained()) {
                action.run();
            }
        });
    }

    @Override
    public int reclaimLostSlots() {
        return real.reclaimLostSlots();
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        return real.poll(sink, max);
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
        real.close();
    }

    @Override
    public int registerBuffers(long[] addresses, long[] lengths) {
        return real.registerBuffers(addresses, lengths);
    }

    @Override
    public void unregisterBuffers() {
        real.unregisterBuffers();
    }

    @Override
    public String bufferRegistration() {
        return real.bufferRegistration();
    }
}
