package io.vblk.engine;

import java.util.function.BooleanSupplier;

import org.agrona.concurrent.NanoClock;

/**
 * The answer window ({@link Tuning#answerWindowNs()}) as a wrapper of an I/O thread's sleep in
 * the kernel, the {@link KernelSleep} its idle strategy calls ({@link KernelIdleStrategy}, and
 * {@link AdaptivePollIdleStrategy} once its poll window is over; the other strategies never sleep
 * in the kernel, so never wait here): after a round that published completions, with a deep
 * queue at the back end, it waits until the window (counted from that publish) closes for the
 * guest to post new buffers or for a completion, yielding the CPU between looks, with the
 * notifications still disabled (the guest does not kick for what it posts meanwhile). When there
 * is work it returns without sleeping and the next round takes it; otherwise the wrapped sleep
 * runs. One wait per publish: a window that closed empty is not waited again before the next
 * one. Whether a wait pays is {@link AnswerWindow}'s decision.
 *
 * <p>Like {@link InFlightYieldIdleStrategy} it idles by yielding, in the idle path and only where
 * {@link IdleStrategies#forIoThread} put it. It owns the window's state (the last publish, whether
 * a wait for it is due, the count of waits that caught an answer); one thread, allocation-free.
 */
final class AnswerWindowSleep implements KernelSleep {
    private final KernelSleep sleep;
    private final AnswerWindow window;
    private final NanoClock clock;
    /** The thread runs, the back end holds a deep queue, and a request is free for the answer. */
    private final BooleanSupplier worthWaiting;
    /** There is work: a completion, an inbox entry, or buffers the guest posted. */
    private final BooleanSupplier answered;
    /** The thread still runs (a shutdown ends the wait). */
    private final BooleanSupplier running;
    private final Runnable yielder;
    /** When the last round that reaped completions published them. */
    private long publishedAtNs;
    /** Completions were published and no sleep has waited for the guest's answer since. */
    private boolean awaiting;
    /** Sleeps that the guest's answer (or a completion) cancelled within the window (for tests and diagnostics). */
    private long caught;

    AnswerWindowSleep(KernelSleep sleep, AnswerWindow window, NanoClock clock, BooleanSupplier worthWaiting,
                      BooleanSupplier answered, BooleanSupplier running) {
        this(sleep, window, clock, worthWaiting, answered, running, Thread::yield);
    }

    /** As above, yielding with {@code yielder} (tests). */
    AnswerWindowSleep(KernelSleep sleep, AnswerWindow window, NanoClock clock, BooleanSupplier worthWaiting,
                      BooleanSupplier answered, BooleanSupplier running, Runnable yielder) {
        this.sleep = sleep;
        this.window = window;
        this.clock = clock;
        this.worthWaiting = worthWaiting;
        this.answered = answered;
        this.running = running;
        this.yielder = yielder;
    }

    /** A round published completions at {@code nowNs}: the next sleep may wait for the answer. */
    void published(long nowNs) {
        publishedAtNs = nowNs;
        awaiting = true;
    }

    @Override
    public void sleep() {
        if (awaiting && awaitAnswer()) {
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.ANSWER, 0);
            }
            return;
        }
        sleep.sleep();
    }

    /**
     * Waits for the answer to the last publish, if it pays: returns true when there is work
     * (the caller skips the sleep), false when the window was closed, not worth it, or ran out.
     */
    boolean awaitAnswer() {
        awaiting = false;
        if (!worthWaiting.getAsBoolean()) {
            return false;
        }
        long windowNs = window.next();
        long deadline = publishedAtNs + windowNs;
        if (windowNs == 0 || clock.nanoTime() - deadline >= 0) {
            return false; // closed, or the round outlasted it: its pop already took any answer
        }
        do {
            if (answered.getAsBoolean()) {
                caught++;
                window.caught();
                return true;
            }
            yielder.run();
        } while (clock.nanoTime() - deadline < 0 && running.getAsBoolean());
        window.missed();
        return false;
    }

    /** The adaptive window's current length (0: closed), for tests. */
    long windowNs() {
        return window.windowNs();
    }

    /** Sleeps that {@link #awaitAnswer()} cancelled because the guest answered (or a completion came) within the window. */
    long answersCaught() {
        return caught;
    }
}
