package io.vblk.engine;

import io.vblk.sys.EventFd;

/**
 * How a queue tells the driver that used buffers are ready: an irqfd / vhost-user call eventfd,
 * or a callback into an embedding VMM. Called at most once per completion batch, from a
 * data-plane thread; it must not block.
 */
@FunctionalInterface
public interface Interrupt {
    /** An interrupt that goes nowhere (polling drivers). */
    Interrupt NONE = () -> { };

    /** Signals the driver. */
    void signal();

    /** An interrupt that writes {@code eventFd} (the caller keeps ownership of the descriptor). */
    static Interrupt of(EventFd eventFd) {
        return eventFd::signal;
    }
}
