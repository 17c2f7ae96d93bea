package io.vblk.engine;

/**
 * Records which requests of a queue are in flight, in memory that outlives the process (the
 * vhost-user inflight region, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD), so that a restarted backend
 * can resubmit exactly the requests the guest has not seen completed. Called on the data path,
 * so implementations must be a few plain stores: no allocation, lock or syscall.
 *
 * <p>Call order per request: {@link #popped} on the I/O thread before its I/O is submitted;
 * {@link #used} on the completion side before its used element is written; then, for the whole
 * batch, {@link #published} right after {@code used.idx} is stored.
 */
public interface InflightTracker {
    /** Chain {@code head} was taken from the ring and is now in flight. */
    void popped(int head);

    /** Chain {@code head} completes in the batch being pushed. */
    void used(int head);

    /** The batch is visible to the driver: {@code used.idx} is now {@code usedIdx}. */
    void published(int usedIdx);
}
