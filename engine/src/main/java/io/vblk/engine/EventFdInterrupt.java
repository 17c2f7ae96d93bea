package io.vblk.engine;

import io.vblk.sys.EventFd;

/**
 * {@link Interrupt#of(EventFd)}: the embedder's eventfd, which a device never signals itself.
 * {@link BlockDevice#setInterrupt} installs {@link #bind()}'s copy instead, so that an embedder
 * closing its descriptor (and the kernel handing the number to another file) can never make the
 * device write that other file (a reviewer's irqfd written into a reused number).
 */
final class EventFdInterrupt implements Interrupt {
    private final EventFd eventFd;

    EventFdInterrupt(EventFd eventFd) {
        this.eventFd = eventFd;
    }

    @Override
    public void signal() {
        eventFd.signal();
    }

    /** An interrupt over a duplicate of the descriptor, which the device owns and closes. */
    Owned bind() {
        return new Owned(eventFd.duplicate());
    }

    @Override
    public String toString() {
        return "Interrupt.of(" + eventFd + ")";
    }

    /** A device queue's own copy of an embedder's eventfd. */
    static final class Owned implements Interrupt {
        private final EventFd copy;

        Owned(EventFd copy) {
            this.copy = copy;
        }

        @Override
        public void signal() {
            copy.signal();
        }

        /** Closes the copy; called once nothing can signal it any more. */
        void close() {
            copy.close();
        }

        @Override
        public String toString() {
            return "Interrupt.of(copy " + copy + ")";
        }
    }
}
