package io.vblk.vhost;

import io.vblk.engine.DeviceListener;
import io.vblk.sys.EventFd;

/**
 * Reports a quarantined queue to the frontend through that queue's error eventfd (SET_VRING_ERR)
 * and logs it. Called from data-plane threads, rarely; the lock makes a replacement or close of
 * an eventfd by the control thread exclusive with a signal, so a descriptor number is never
 * written after it was closed (and possibly reused for something else).
 */
final class QueueErrors implements DeviceListener {
    private final EventFd[] errorFds;
    private final Log log;

    QueueErrors(int numQueues, Log log) {
        this.errorFds = new EventFd[numQueues];
        this.log = log;
    }

    /** Installs queue {@code q}'s error eventfd (null: none) and returns the previous one for the caller to close. */
    synchronized EventFd replace(int q, EventFd errorFd) {
        EventFd old = errorFds[q];
        errorFds[q] = errorFd;
        return old;
    }

    /** Signals queue {@code q}'s error eventfd, if any. */
    synchronized void signal(int q) {
        EventFd e = errorFds[q];
        if (e != null) {
            e.signal();
        }
    }

    @Override
    public void faultAttributed(String report) {
        log.info(report);
    }

    @Override
    public void queueBroken(int queue, String reason) {
        log.info("queue " + queue + " quarantined: " + reason);
        signal(queue);
    }
}
