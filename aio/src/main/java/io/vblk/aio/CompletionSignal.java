package io.vblk.aio;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

import io.vblk.sys.EventFd;

/**
 * How a back end tells its reaper that completions may be available: an eventfd on Linux (the
 * engine sleeps on it with epoll next to its kick eventfds), or thread parking where there is no
 * eventfd. A strategy object so the back ends do not care which.
 */
abstract class CompletionSignal implements AutoCloseable {
    /** Wakes the reaper. May be called from any thread. */
    abstract void signal();

    /** Waits up to {@code timeoutMs} (-1: forever) for a signal; 1 if signalled, 0 on timeout, or -errno. */
    abstract int await(int timeoutMs);

    /** Called by the reaper as it starts polling: a parked signal is consumed here. */
    abstract void onPoll();

    /** The eventfd, or null. */
    abstract EventFd eventFd();

    @Override
    public abstract void close();

    /** A non-blocking eventfd: a kernel back end also passes it to the kernel to signal. */
    static CompletionSignal overEventFd() {
        return new EventFdSignal(EventFd.create(true));
    }

    /** Park/unpark, for platforms without eventfd. */
    static CompletionSignal parking() {
        return new ParkingSignal();
    }

    private static final class EventFdSignal extends CompletionSignal {
        private final EventFd eventFd;

        EventFdSignal(EventFd eventFd) {
            this.eventFd = eventFd;
        }

        @Override
        void signal() {
            // EAGAIN means the counter is saturated: the reader wakes anyway.
            eventFd.signal();
        }

        @Override
        int await(int timeoutMs) {
            return eventFd.await(timeoutMs);
        }

        @Override
        void onPoll() {
            // The engine resets the eventfd itself by reading it before it polls.
        }

        @Override
        EventFd eventFd() {
            return eventFd;
        }

        @Override
        public void close() {
            eventFd.close();
        }
    }

    private static final class ParkingSignal extends CompletionSignal {
        private volatile boolean raised;
        private volatile Thread waiter;

        @Override
        void signal() {
            raised = true;
            Thread w = waiter;
            if (w != null) {
                LockSupport.unpark(w);
            }
        }

        @Override
        int await(int timeoutMs) {
            if (raised) {
                return 1;
            }
            // Publish the waiter before re-checking: a signal after this point unparks us, one
            // before it is seen by the re-check.
            waiter = Thread.currentThread();
            try {
                long deadline = timeoutMs < 0 ? Long.MAX_VALUE : System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
                while (!raised) {
                    long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        return 0;
                    }
                    if (timeoutMs < 0) {
                        LockSupport.park(this);
                    } else {
                        LockSupport.parkNanos(this, left);
                    }
                }
                return 1;
            } finally {
                waiter = null;
            }
        }

        @Override
        void onPoll() {
            raised = false;
        }

        @Override
        EventFd eventFd() {
            return null;
        }

        @Override
        public void close() {
            raised = true;
            Thread w = waiter;
            if (w != null) {
                LockSupport.unpark(w);
            }
        }
    }
}
