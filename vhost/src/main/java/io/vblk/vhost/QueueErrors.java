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

    /**
     * A drain the back end does not finish (an NBD server that stopped answering, a hung FUSE
     * file): logged, so that a stuck export shows; the frontend's answer (GET_VRING_BASE) waits
     * on, since answering with requests in flight would lose them in a migration (facts.md).
     */
    @Override
    public void controlCallStalled(String what, long waitedMs, boolean ended) {
        log.info(ended ? what + ": ended after " + waitedMs + " ms"
                : what + ": STALLED, waiting " + waitedMs + " ms so far for the back end to complete the requests in"
                        + " flight (the frontend's answer waits too; closing the export gives up on it after its deadline)");
    }

    @Override
    public void queueBroken(int queue, String reason) {
        log.info("queue " + queue + " quarantined: " + reason);
        signal(queue);
    }
}
