package io.vblk.engine;

import io.vblk.sys.EventFd;

/**
 * How a queue tells the driver that used buffers are ready: an irqfd / vhost-user call eventfd,
 * or a callback into an embedding VMM. Called at most once per completion batch, from a
 * data-plane thread (the queue's I/O thread, or its completion thread); it must not block.
 *
 * <p>From {@link #signal()} the device's control methods must not be called: they wait for the
 * very thread that is signalling, so they throw {@link IllegalStateException} there (hand the
 * call to another thread, e.g. an executor). An exception thrown by {@link #signal()}
 * quarantines the queue ({@link BlockDevice#isBroken}, reason "interrupt failed: ...") until a
 * reset: the driver would otherwise wait for an interrupt that never comes.
 *
 * <p>Descriptor lifetime: an interrupt made by {@link #of(EventFd)} is recognised by {@link
 * BlockDevice#setInterrupt}, which signals a duplicate of the descriptor of its own (closed when
 * the queue's interrupt is replaced, or once the device is closed and quiesced). The caller's
 * {@link EventFd} is only read while {@code setInterrupt} runs: close it whenever you like after
 * that, and the device never writes a descriptor number it does not own. An interrupt of your own
 * that writes a descriptor must keep that descriptor open until {@code setInterrupt} replaced it
 * or the device is closed.
 */
@FunctionalInterface
public interface Interrupt {
    /** An interrupt that goes nowhere (polling drivers). */
    Interrupt NONE = () -> { };

    /** Signals the driver. */
    void signal();

    /**
     * An interrupt that writes {@code eventFd}. It holds no descriptor of its own: {@link
     * BlockDevice#setInterrupt} duplicates {@code eventFd} for the queue (see the class comment),
     * so {@code eventFd} must be open when it is set and may be closed at any time afterwards.
     * Signalled outside a device (directly) it writes {@code eventFd} itself.
     */
    static Interrupt of(EventFd eventFd) {
        return new EventFdInterrupt(java.util.Objects.requireNonNull(eventFd, "eventFd"));
    }
}
