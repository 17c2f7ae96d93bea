package io.vblk.aio;

import java.util.concurrent.locks.LockSupport;

import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.agrona.concurrent.OneToOneConcurrentArrayQueue;

/**
 * The helper thread of a back end, for the operations its kernel interface cannot do
 * asynchronously: discard and write-zeroes under Linux AIO (it has no fallocate command), a
 * flush when the kernel refuses IOCB_CMD_FDSYNC, and a zeroing whose FALLOCATE io_uring answered
 * with EOPNOTSUPP (its fallback writes zeros). None of these may run on the I/O thread: a
 * write-zeroes of 2 GiB written as zeros takes seconds and would stall every queue of the thread.
 *
 * <p>Bounded: one thread per back end (started on first use, so a back end that never discards
 * has none), and a queue of at most {@code depth} slots, which is every slot there is, so an
 * offer never fails. Operations run one at a time in the order offered; each long zeroing is cut
 * into {@link Image#ZEROING_CHUNK_BYTES} chunks with a look at the back end's close between
 * chunks. A finished slot goes, with its result stored, onto a single-producer queue that the
 * reaper drains in {@link SlottedBackend#poll} exactly like a kernel completion, and the back
 * end's completion signal is raised (coalesced, at most once per poll).
 *
 * <p>Producers: the submitting thread (at submit), and the reaping thread (an io_uring zeroing
 * the filesystem refused); with a dedicated completion thread those are two threads, hence the
 * many-to-one request queue. Slot numbers travel as preallocated boxes: nothing is allocated
 * per operation.
 */
final class Offload implements Runnable {
    private final SlottedBackend backend;
    private final Integer[] boxes;
    private final ManyToOneConcurrentArrayQueue<Integer> requests;
    private final OneToOneConcurrentArrayQueue<Integer> done;
    private final Thread thread;
    private volatile boolean stopping;
    /** The thread has ended and every slot it held was dropped ({@link #stop}). */
    private volatile boolean stopped;

    Offload(SlottedBackend backend, int depth, String name) {
        this.backend = backend;
        this.boxes = new Integer[depth];
        for (int slot = 0; slot < depth; slot++) {
            boxes[slot] = slot;
        }
        // Agrona's queues hold at least two entries.
        this.requests = new ManyToOneConcurrentArrayQueue<>(Math.max(2, depth));
        this.done = new OneToOneConcurrentArrayQueue<>(Math.max(2, depth));
        this.thread = new Thread(this, name);
        thread.setDaemon(true);
        thread.start();
    }

    /** Any producer: queues {@code slot} (never fails: the queue holds every slot). Call {@link #wake} after a batch. */
    void offer(int slot) {
        requests.offer(boxes[slot]);
    }

    /** Any producer: wakes the helper if it sleeps (a no-op, no syscall, when it is busy). */
    void wake() {
        LockSupport.unpark(thread);
    }

    /** Reaper: the next finished slot, or -1. */
    int pollDone() {
        Integer slot = done.poll();
        return slot == null ? -1 : slot;
    }

    /**
     * Operations handed over and not yet taken back by the reaper: counted by the queues
     * themselves as each offer and each poll happens, so no exception can leave it off.
     */
    int inFlight() {
        return stopped ? 0 : (int) (requests.addedCount() - done.removedCount());
    }

    /**
     * Whether the thread has no operation queued or running (every one handed over has
     * finished): at close, when nobody hands over any more, it can only be parked, or about to
     * be, so stopping it cannot hang on the kernel.
     */
    boolean idle() {
        return requests.addedCount() == done.addedCount();
    }

    /** Reaper: whether finished slots wait. */
    boolean hasDone() {
        return !done.isEmpty();
    }

    /** The thread, for tests. */
    Thread thread() {
        return thread;
    }

    @Override
    public void run() {
        while (!stopping) {
            Integer slot = requests.poll();
            if (slot == null) {
                // A wake() between the poll and the park leaves a permit: park returns at once.
                LockSupport.park(this);
                continue;
            }
            backend.performOffloaded(slot);
            // Never full: the queue holds as many entries as there are slots.
            done.offer(slot);
            backend.signalCompletions();
        }
    }

    /**
     * At close, after the back end marked itself closed (which cuts a long zeroing short at its
     * next chunk): stops the thread, waits for the operation it is in, and hands every slot still
     * queued or finished to {@code drop}. Returns false if the thread did not stop within {@code timeoutMs}
     * (a single fallocate or fdatasync the kernel does not finish).
     */
    boolean stop(java.util.function.IntConsumer drop, long timeoutMs) {
        stopping = true;
        LockSupport.unpark(thread);
        try {
            thread.join(Math.max(1, timeoutMs));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (thread.isAlive()) {
            return false;
        }
        for (Integer slot; (slot = done.poll()) != null; ) {
            drop.accept(slot);
        }
        for (Integer slot; (slot = requests.poll()) != null; ) {
            drop.accept(slot);
        }
        stopped = true;
        return true;
    }
}
