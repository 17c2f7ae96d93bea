package io.vblk.hostmem;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

/**
 * The current {@link GuestMemory} of a device, published by reference so a new table can be
 * installed while queues run, and the rule for when a replaced table may be unmapped.
 *
 * <h2>The rule: quiescent-state reclamation, one {@link Reader} per data-plane thread</h2>
 * <pre>
 *  data-plane thread                          control thread
 *  -----------------                          --------------
 *  Reader r = map.register();
 *  loop:                                      GuestMemory old = map.install(next);
 *    mem = r.current();                       map.retire(old, timeoutNs);  // or awaitQuiescence
 *    ... translate, pop, do I/O, complete ...     -> returns once every reader has passed
 *    r.quiescent();  // holds NO address            r.quiescent() after the install,
 *                    // from before this point      then unmaps old
 *  before blocking: r.offline(); ... r.online();
 * </pre>
 * A reader calls {@link Reader#quiescent()} only at a point where it holds no host address
 * obtained from a table older than {@link Reader#current()}: not in a local, not in a popped
 * chain, not in a queue's ring translation (re-translate with the new table first), and not in
 * I/O still in flight. Once every registered reader has done so after an install, or is
 * {@linkplain Reader#offline() offline}, nothing can touch the old table and
 * {@link GuestMemory#close()} is safe. A reader that never reaches a quiescent point delays
 * reclamation (the old table stays mapped: safe, only memory is held); it never makes it unsafe.
 *
 * <p>Cost on the data path: {@link Reader#current()} is one volatile read; {@link
 * Reader#quiescent()} is one volatile read and one release store, once per batch.
 */
public final class MemoryMap {
    /** {@link Reader} state of a thread that holds nothing and will re-read the table. */
    private static final long OFFLINE = Long.MAX_VALUE;
    private static final VarHandle OBSERVED;

    static {
        try {
            OBSERVED = MethodHandles.lookup().findVarHandle(Reader.class, "observedEpoch", long.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private volatile GuestMemory current;
    private volatile long epoch;
    private volatile Reader[] readers = new Reader[0];

    /** Publishes {@code initial}. */
    public MemoryMap(GuestMemory initial) {
        if (initial == null) {
            throw new IllegalArgumentException("initial table is null");
        }
        current = initial;
    }

    /** The table in force (one volatile read). */
    public GuestMemory current() {
        return current;
    }

    /** How many tables have been installed since construction. */
    public long epoch() {
        return epoch;
    }

    /**
     * Publishes {@code next} and returns the table it replaces, which stays mapped until the
     * caller closes it: use {@link #retire} (or {@link #awaitQuiescence} then close).
     */
    public synchronized GuestMemory install(GuestMemory next) {
        if (next == null) {
            throw new IllegalArgumentException("next table is null");
        }
        GuestMemory old = current;
        current = next;
        // bumped after the store above: a reader that sees the new epoch sees the new table
        epoch = epoch + 1;
        return old;
    }

    /** Registers the calling data-plane thread as a reader; it starts online and quiescent. */
    public synchronized Reader register() {
        Reader r = new Reader(this);
        Reader[] grown = Arrays.copyOf(readers, readers.length + 1);
        grown[grown.length - 1] = r;
        readers = grown;
        return r;
    }

    private synchronized void deregister(Reader r) {
        Reader[] now = readers;
        for (int i = 0; i < now.length; i++) {
            if (now[i] == r) {
                Reader[] shrunk = new Reader[now.length - 1];
                System.arraycopy(now, 0, shrunk, 0, i);
                System.arraycopy(now, i + 1, shrunk, i, now.length - i - 1);
                readers = shrunk;
                return;
            }
        }
    }

    /**
     * Whether every registered reader is offline or has passed a quiescent point since the latest
     * {@link #install}: then every table replaced so far may be closed.
     */
    public boolean isQuiescent() {
        long target = epoch;
        for (Reader r : readers) {
            // acquire: pairs with the reader's release store in quiescent(), so its accesses to
            // the old table happen-before the caller unmaps it
            if ((long) OBSERVED.getAcquire(r) < target) {
                return false;
            }
        }
        return true;
    }

    /** Waits (yielding, then parking briefly) until {@link #isQuiescent()}; false on timeout. */
    public boolean awaitQuiescence(long timeoutNs) {
        long deadline = System.nanoTime() + timeoutNs;
        for (int spins = 0; !isQuiescent(); spins++) {
            if (System.nanoTime() - deadline >= 0) {
                return false;
            }
            if (spins < 100) {
                Thread.yield();
            } else {
                LockSupport.parkNanos(TimeUnit.MICROSECONDS.toNanos(100));
            }
        }
        return true;
    }

    /**
     * Waits for quiescence and closes {@code old}. Returns false, leaving {@code old} mapped, if
     * some reader did not pass a quiescent point within {@code timeoutNs}: try again later.
     */
    public boolean retire(GuestMemory old, long timeoutNs) {
        if (old == current) {
            throw new IllegalArgumentException("cannot retire the table in force: " + old);
        }
        if (!awaitQuiescence(timeoutNs)) {
            return false;
        }
        old.close();
        return true;
    }

    /**
     * One data-plane thread's view of a {@link MemoryMap}. Single-threaded: only its own thread
     * calls it.
     */
    public static final class Reader implements AutoCloseable {
        private final MemoryMap map;
        @SuppressWarnings("unused") // accessed through OBSERVED
        private volatile long observedEpoch;

        private Reader(MemoryMap map) {
            this.map = map;
            this.observedEpoch = map.epoch;
        }

        /** The table in force; use it until the next {@link #quiescent()}. */
        public GuestMemory current() {
            return map.current;
        }

        /**
         * Declares that this thread holds no host address from any table older than the one
         * {@link #current()} returns from now on. Call it once per batch, where nothing is held.
         */
        public void quiescent() {
            // release: every access this thread made to an old table happens-before a control
            // thread that reads this (acquire, isQuiescent) and unmaps it
            OBSERVED.setRelease(this, map.epoch);
        }

        /** Declares this thread idle (about to block): it holds nothing and never delays reclamation. */
        public void offline() {
            OBSERVED.setRelease(this, OFFLINE);
        }

        /** Ends {@link #offline()}; read {@link #current()} again after it. */
        public void online() {
            // volatile (not just release): the store must be ordered before the next read of the
            // table, or a control thread that saw us offline could unmap the table we then read
            OBSERVED.setVolatile(this, map.epoch);
        }

        /** Deregisters this reader; it no longer delays reclamation. */
        @Override
        public void close() {
            map.deregister(this);
        }
    }
}
