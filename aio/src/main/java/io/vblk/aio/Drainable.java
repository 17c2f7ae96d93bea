package io.vblk.aio;

import io.vblk.sys.Errno;

/**
 * What "stop means drain" needs of anything that submits in batches and reaps completions: an
 * {@link IoBackend}, and a block driver above it. One drain loop serves both.
 */
public interface Drainable {
    /** How long {@link #drain} sleeps between looks when nothing completed. */
    int DRAIN_WAIT_MS = 10;

    /** The most operations in flight at once. */
    int depth();

    /** Hands everything prepared over with one system call; the number taken, or {@code -errno}. */
    int submit();

    /** Operations prepared and not yet taken by {@link #submit()}. */
    int pendingSubmit();

    /** Operations taken and not yet completed. */
    int inFlight();

    /** Delivers up to {@code max} completions to {@code sink}; never blocks. */
    int poll(CompletionSink sink, int max);

    /** Blocks up to {@code timeoutMs} until completions may be available: 1, 0 on timeout, or -errno. */
    int awaitCompletions(int timeoutMs);

    /** Resets every completion source after it woke the caller, before {@link #poll}. */
    void acknowledgeCompletions();

    /**
     * Submits whatever is pending and reaps until nothing is pending or in flight, delivering
     * every completion to {@code sink}. Called on a thread that may both submit and poll (no other
     * thread may be using this).
     *
     * @return the number of completions delivered, or {@code -errno} when submission failed
     *         with something other than EAGAIN
     */
    default long drain(CompletionSink sink) {
        return drainUntil(sink, 0, false);
    }

    /**
     * As {@link #drain}, giving up after {@code timeoutNs} (a back end that never answers).
     *
     * @return whether nothing is pending or in flight any more
     */
    default boolean drainWithin(CompletionSink sink, long timeoutNs) {
        drainUntil(sink, System.nanoTime() + timeoutNs, true);
        return pendingSubmit() == 0 && inFlight() == 0;
    }

    private long drainUntil(CompletionSink sink, long deadlineNs, boolean bounded) {
        long delivered = 0;
        while (pendingSubmit() > 0 || inFlight() > 0) {
            // Past the deadline nothing more is submitted, but what already completed is still
            // taken: a deadline used up by others (a close's) must not make finished work
            // look undrained.
            boolean late = bounded && System.nanoTime() - deadlineNs > 0;
            if (!late && pendingSubmit() > 0) {
                int rc = submit();
                if (rc < 0 && rc != -Errno.EAGAIN && rc != -Errno.EINTR) {
                    return rc;
                }
            }
            acknowledgeCompletions();
            int reaped = poll(sink, Math.max(1, depth()));
            delivered += reaped;
            if (late && reaped == 0) {
                return delivered;
            }
            if (reaped == 0 && (inFlight() > 0 || pendingSubmit() > 0)) {
                awaitCompletions(DRAIN_WAIT_MS);
            }
        }
        return delivered;
    }
}
