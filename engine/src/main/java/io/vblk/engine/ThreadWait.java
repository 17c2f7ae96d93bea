package io.vblk.engine;

/**
 * Where an I/O thread sleeps in the kernel and how other threads wake it: {@link EpollWait} (an
 * epoll set over the kick eventfds, the back end's completion sources and a wake-up eventfd) or
 * {@link RingWait} (the back end's io_uring, with polls on the same eventfds). The I/O thread
 * owns it; {@link #wakeIfSleeping()} and {@link #wake()} may be called from any thread.
 */
interface ThreadWait extends AutoCloseable {
    /**
     * Marks the thread sleeping (or awake). The volatile store pairs with the read in
     * {@link #wakeIfSleeping()}: a publisher either sees the mark and signals, or published
     * before the thread's last re-check of its inbox.
     */
    void sleeping(boolean value);

    /** Wakes the thread if it is marked sleeping (any thread). */
    void wakeIfSleeping();

    /** Wakes the thread whatever it is doing (shutdown). */
    void wake();

    /** Waits up to {@code timeoutMs} (-1: no limit, 0: only collects) and acknowledges what woke it. */
    void await(int timeoutMs);

    /**
     * Before a sleep: resets the back end's completion sources that completions the rounds
     * already reaped left readable (else the sleep wakes at once to nothing, one wake-up per
     * lump of completions), and returns whether completions are ready after all (the thread
     * does not sleep). I/O thread only.
     */
    boolean rearmCompletions();

    /** Starts watching {@code q}'s kick eventfd (I/O thread only). */
    void watchKick(DeviceQueue q);

    /** Stops watching {@code q}'s kick eventfd (I/O thread only). */
    void unwatchKick(DeviceQueue q);

    @Override
    void close();
}
