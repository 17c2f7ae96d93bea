package io.vblk.engine;

import io.vblk.aio.CompletionSink;
import io.vblk.block.BlockDriver;

/**
 * How finished requests get from an I/O thread's back end to the guest: on the I/O thread itself
 * ({@link InlineCompletionRoute}, shared threading) or on a completion thread of their own
 * ({@link DedicatedCompletionRoute}). The I/O thread calls every method; only the dedicated route
 * has a second thread behind it.
 */
interface CompletionRoute extends CompletionSink {
    /**
     * The route {@code tuning}'s threading mode asks for, for an I/O thread over {@code backend}:
     * a dedicated route wakes the I/O thread with {@code wake} when it returns requests.
     *
     * @throws IllegalArgumentException for dedicated completion threads over a single-issuer ring
     */
    static CompletionRoute of(Tuning tuning, DeviceModel model, BlockDriver backend, RequestDispatcher dispatcher,
                              CompletionPath completions, DeviceQueue[] queues, Runnable wake) {
        RequestPool pool = dispatcher.pool();
        if (tuning.threadingMode() != ThreadingMode.DEDICATED) {
            return new InlineCompletionRoute(pool, completions, dispatcher::release);
        }
        if (backend.singleIssuer()) {
            // Its completions are posted only when the submitting thread enters the ring.
            throw new IllegalArgumentException("a single-issuer io_uring ring (vblk.uring.singleIssuer) is reaped by the"
                    + " thread that submits: ThreadingMode.SHARED, not dedicated completion threads");
        }
        return new DedicatedCompletionRoute(pool, completions, queues,
                DedicatedCompletionRoute.ringSize(pool.size(), model.maxSegmentsPerRange()),
                WaitStrategies.disruptor(tuning), dispatcher::release, wake);
    }

    /** A request that reached no back end (refused by the parser, or its submit failed) ends now. */
    void completeImmediately(BlkRequest r);

    /**
     * End of a batch of completions on the I/O thread: the inline route publishes used.idx and
     * signals each touched queue once; the dedicated route's own thread does that per batch.
     */
    void endOfBatch();

    /**
     * Whether requests completed on this thread wait for {@link #endOfBatch()} (used entries
     * written, used.idx not yet published): a round that did no other work must still end the
     * batch. The dedicated route ends its own batches: never.
     */
    default boolean unpublished() {
        return false;
    }

    /** Takes back requests finished on another thread into the pool; returns how many. */
    int reclaim();

    /** Whether finished requests wait for {@link #reclaim()} (the I/O thread must not sleep then). */
    boolean hasReturns();

    /**
     * Publishes a fence and returns its sequence; once {@link #passed} says so, every batch begun
     * before it has finished, and queue fields written before it (such as the interrupt) are
     * read anew. -1 for the inline route: always passed.
     */
    long fence();

    /** Whether fence {@code sequence} has been passed. */
    boolean passed(long sequence);

    /** Whether it runs a thread of its own (and so cannot run on a {@link SharedIoThread}). */
    boolean ownsThread();

    /** Starts its thread, if any, named after the I/O thread. */
    void start(String ioThreadName);

    /** Stops its thread, if any, and waits for it. */
    void close();
}
