package io.vblk.testkit;

import java.util.ArrayList;
import java.util.List;
import java.util.Queue;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.EventFd;

/**
 * A real back end that withholds completions, as a slow or frozen disk would, for tests that
 * need requests in flight for as long as they choose (no real device can be told to stall).
 * Two ways, combinable:
 * <ul>
 * <li>the gate: while it is closed every completion waits in the real back end's completion
 * queue (the operations run);</li>
 * <li>held writes: writes at chosen offsets are never started; they are accepted and withheld
 * until {@link #release()} completes them without executing them, as a backend process frozen
 * (or killed) with those requests in flight would. Every write offset asked for is recorded,
 * so a test can tell which requests a backend executed and how often.</li>
 * </ul>
 * Everything else goes to the real back end.
 */
public final class GatedBackend extends ForwardingBackend {
    private record Held(long userData, long length) {
    }

    private final Set<Long> heldOffsets;
    private final Queue<Long> writeOffsets;
    private final Queue<Held> held = new ConcurrentLinkedQueue<>();
    private volatile boolean open;
    private volatile boolean released;

    /** A gate over {@code real}, open or closed. */
    public GatedBackend(IoBackend real, boolean open) {
        this(real, open, Set.of(), null);
    }

    private GatedBackend(IoBackend real, boolean open, Set<Long> heldOffsets, Queue<Long> writeOffsets) {
        super(real);
        this.open = open;
        this.heldOffsets = heldOffsets;
        this.writeOffsets = writeOffsets;
    }

    /** Opens the gate and wakes whoever waits for completions. */
    public void open() {
        open = true;
        wake();
    }

    /** Opens ({@code true}) or closes the gate without waking anyone. */
    public void set(boolean value) {
        open = value;
    }

    /** Whether the gate is open. */
    public boolean isOpen() {
        return open;
    }

    /** Lets every held write complete (without executing it), so the device can drain and close. */
    public void release() {
        released = true;
        wake();
    }

    private void wake() {
        EventFd e = real.completionEvent();
        if (e != null) {
            e.signal();
        }
    }

    @Override
    public int prepareWrite(long offset, IoVector buffers, long userData) {
        if (writeOffsets != null) {
            writeOffsets.add(offset);
        }
        if (heldOffsets.contains(offset)) {
            held.add(new Held(userData, buffers.totalLength()));
            return 0;
        }
        return real.prepareWrite(offset, buffers, userData);
    }

    @Override
    public int inFlight() {
        return real.inFlight() + held.size();
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        if (!open) {
            return 0;
        }
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
    public int awaitCompletions(int timeoutMs) {
        return open && released && !held.isEmpty() ? 1 : real.awaitCompletions(timeoutMs);
    }

    @Override
    public void close() {
        open = true;
        real.close();
    }

    /**
     * Wraps every back end a device opens so that the writes at chosen offsets are held (see
     * {@link GatedBackend}); records every write offset asked for across them.
     */
    public static final class Holder {
        private final Set<Long> heldOffsets;
        /** Every write offset asked for, in order, across the back ends wrapped. */
        public final Queue<Long> writeOffsets = new ConcurrentLinkedQueue<>();
        private final List<GatedBackend> opened = new ArrayList<>();

        /** Holds the writes at {@code heldOffsets} (bytes); an empty set holds nothing and only records. */
        public Holder(Set<Long> heldOffsets) {
            this.heldOffsets = Set.copyOf(heldOffsets);
        }

        /** Wraps {@code real} (a back end the device just opened). */
        public IoBackend wrap(IoBackend real) {
            GatedBackend b = new GatedBackend(real, true, heldOffsets, writeOffsets);
            synchronized (opened) {
                opened.add(b);
            }
            return b;
        }

        /** Lets every held write complete (without executing it), so the device can drain and close. */
        public void release() {
            synchronized (opened) {
                opened.forEach(GatedBackend::release);
            }
        }

        /** Writes held so far. */
        public int held() {
            synchronized (opened) {
                return opened.stream().mapToInt(b -> b.held.size()).sum();
            }
        }
    }
}
