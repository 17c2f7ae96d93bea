package io.vblk.vhost;

import java.util.ArrayList;
import java.util.List;
import java.util.Queue;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.engine.BackendFactory;
import io.vblk.sys.EventFd;

/**
 * A back end that never starts the writes at chosen offsets: it accepts them and withholds them
 * until {@link #release()}, as a backend process frozen (or killed) with those requests in flight
 * would. Everything else goes to the real back end. Every write offset asked for is recorded, so
 * a test can tell which requests a backend executed and how often.
 */
final class HoldingBackend implements IoBackend {
    /** The factory: wraps each back end the device opens. */
    static final class Factory {
        private final Set<Long> heldOffsets;
        final Queue<Long> writeOffsets = new ConcurrentLinkedQueue<>();
        private final List<HoldingBackend> opened = new ArrayList<>();

        /** Holds the writes at {@code heldOffsets} (bytes); an empty set holds nothing and only records. */
        Factory(Set<Long> heldOffsets) {
            this.heldOffsets = Set.copyOf(heldOffsets);
        }

        BackendFactory wrap(BackendFactory real) {
            return depth -> {
                HoldingBackend b = new HoldingBackend(real.open(depth), heldOffsets, writeOffsets);
                synchronized (opened) {
                    opened.add(b);
                }
                return b;
            };
        }

        /** Lets every held write complete (without executing it), so the device can drain and close. */
        void release() {
            synchronized (opened) {
                opened.forEach(HoldingBackend::release);
            }
        }

        /** Writes held so far. */
        int held() {
            synchronized (opened) {
                return opened.stream().mapToInt(b -> b.held.size()).sum();
            }
        }
    }

    private record Held(long userData, long length) {
    }

    private final IoBackend real;
    private final Set<Long> heldOffsets;
    private final Queue<Long> writeOffsets;
    private final Queue<Held> held = new ConcurrentLinkedQueue<>();
    private volatile boolean released;

    private HoldingBackend(IoBackend real, Set<Long> heldOffsets, Queue<Long> writeOffsets) {
        this.real = real;
        this.heldOffsets = heldOffsets;
        this.writeOffsets = writeOffsets;
    }

    void release() {
        released = true;
        EventFd e = real.completionEvent();
        if (e != null) {
            e.signal();
        }
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
        writeOffsets.add(offset);
        if (heldOffsets.contains(offset)) {
            held.add(new Held(userData, buffers.totalLength()));
            return 0;
        }
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
        return real.inFlight() + held.size();
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        int done = 0;
        if (released) {
            Held h;
            while (done < max && (h = held.poll()) != null) {
                sink.complete(h.userData(), h.length());
                done++;
            }
        }
        return done + real.poll(sink, max - done);
    }

    @Override
    public EventFd completionEvent() {
        return real.completionEvent();
    }

    @Override
    public int awaitCompletions(int timeoutMs) {
        return released && !held.isEmpty() ? 1 : real.awaitCompletions(timeoutMs);
    }

    @Override
    public void close() {
        real.close();
    }
}
