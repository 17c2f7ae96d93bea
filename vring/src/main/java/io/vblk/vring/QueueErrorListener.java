package io.vblk.vring;

/**
 * Told when a queue is quarantined (virtio 1.2 2.1.2: the device should set DEVICE_NEEDS_RESET
 * and stop using the queue); the owner raises "needs reset" (vhost-user: the error eventfd).
 * Called once per quarantine, on the thread that found the corruption.
 */
@FunctionalInterface
public interface QueueErrorListener {
    /** A listener that does nothing. */
    QueueErrorListener NONE = (queueIndex, error) -> { };

    /** Queue {@code queueIndex} was quarantined because of {@code error}. */
    void onQueueError(int queueIndex, QueueError error);
}
