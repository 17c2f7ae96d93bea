package io.vblk.aio;

/**
 * An I/O thread's sleep inside its back end's io_uring, as fio sleeps: one
 * {@code io_uring_enter(GETEVENTS, min_complete=1)} that returns for an I/O completion or for a
 * readiness poll (IORING_OP_POLL_ADD, multishot) on the descriptors the thread watches (its
 * queues' kick eventfds, its own wake-up eventfd). It replaces an epoll set plus the ring's
 * completion eventfd: a wake-up by a completion costs one system call instead of three
 * ({@code epoll_wait}, the eventfd read, the enter that posts cooperative completions), and the
 * kernel no longer signals an eventfd per completion batch.
 *
 * <p>Obtained once from {@link IoBackend#sleepInRing()}; everything here belongs to the thread
 * that submits to and reaps the back end. Poll completions are consumed by the back end's
 * {@link IoBackend#poll} (they never reach the sink) and reported to the {@link Woken} listener.
 */
public interface RingSleep {
    /**
     * Watches {@code fd} for readability under {@code tag}: each write to it (an eventfd signal)
     * ends a {@link #sleep}. The poll is armed by the next sleep, and armed at a moment when the
     * descriptor is already readable it fires at once, so a signal between the caller's last
     * check and the sleep is never lost. The descriptor must stay open until {@link #unwatch}.
     */
    void watch(int fd, int tag);

    /** Stops watching the descriptor watched under {@code tag} (no-op if none). */
    void unwatch(int tag);

    /**
     * Sleeps until a completion, a watched descriptor's wake-up or {@code timeoutNs} (negative:
     * no limit); returns at once when completions or wake-ups wait already, or operations are
     * prepared and not submitted (the caller has work). Does not reap.
     */
    void sleep(long timeoutNs);

    /** Who hears which watched descriptor woke (called from {@link IoBackend#poll}). */
    void onWake(Woken listener);

    /** Told the tag of a watched descriptor that became readable. */
    @FunctionalInterface
    interface Woken {
        void woken(int tag);
    }
}
