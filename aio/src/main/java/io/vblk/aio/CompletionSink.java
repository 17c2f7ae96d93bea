package io.vblk.aio;

/**
 * Receives completions from {@link IoBackend#poll(CompletionSink, int)}. Called on the polling
 * thread, once per accepted operation.
 */
@FunctionalInterface
public interface CompletionSink {
    /**
     * One operation finished.
     *
     * @param userData the value given when the operation was prepared
     * @param result   bytes transferred (zero or more; flush, discard and write-zeroes give 0), or
     *                 {@code -errno}
     */
    void complete(long userData, long result);
}
