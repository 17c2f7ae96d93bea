package io.vblk.engine;

/**
 * Completions on the I/O thread itself: the cheapest route (no hand-off, no second thread to
 * wake), and the only one a {@link SharedIoThread} can run. Completion work then shares the
 * thread's time with popping and submitting.
 */
final class InlineCompletionRoute implements CompletionRoute {
    private final RequestPool pool;
    private final CompletionPath completions;

    /** Finished requests go straight back to the pool through {@code release}. */
    InlineCompletionRoute(RequestPool pool, CompletionPath completions, CompletionPath.Releaser release) {
        this.pool = pool;
        this.completions = completions;
        completions.releaser(release);
    }

    @Override
    public void complete(long userData, long result) {
        completions.complete(pool.get((int) userData), result);
    }

    @Override
    public void completeImmediately(BlkRequest r) {
        completions.complete(r, CompletionPath.IMMEDIATE);
    }

    @Override
    public void endOfBatch() {
        completions.endOfBatch();
    }

    @Override
    public boolean unpublished() {
        return completions.unpublished();
    }

    @Override
    public int reclaim() {
        return 0;
    }

    @Override
    public boolean hasReturns() {
        return false;
    }

    @Override
    public long fence() {
        return -1;
    }

    @Override
    public boolean passed(long sequence) {
        return true;
    }

    @Override
    public boolean ownsThread() {
        return false;
    }

    @Override
    public void start(String ioThreadName) {
    }

    @Override
    public void close() {
    }
}
