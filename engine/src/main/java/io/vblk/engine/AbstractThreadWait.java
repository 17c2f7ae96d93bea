package io.vblk.engine;

import io.vblk.sys.EventFd;

/**
 * What both ways of sleeping share: the wake-up eventfd other threads signal, the sleeping mark
 * that saves that signal while the thread is awake, and the kick count of a queue whose eventfd
 * woke the thread.
 */
abstract class AbstractThreadWait implements ThreadWait {
    final DeviceQueue[] queues;
    final EventFd wakeup;
    private volatile boolean sleeping;

    /** Over {@code queues}, woken through {@code wakeup} (which it then owns). */
    AbstractThreadWait(DeviceQueue[] queues, EventFd wakeup) {
        this.queues = queues;
        this.wakeup = wakeup;
    }

    /**
     * Marks the thread sleeping (or awake). The volatile store pairs with the read in
     * {@link #wakeIfSleeping()}: a publisher either sees the mark and signals, or published
     * before the thread's last re-check of its inbox.
     */
    @Override
    public final void sleeping(boolean value) {
        sleeping = value;
    }

    /** Wakes the thread if it is marked sleeping (any thread). */
    @Override
    public final void wakeIfSleeping() {
        if (sleeping) {
            wakeup.signal();
        }
    }

    /** Wakes the thread whatever it is doing (shutdown). */
    @Override
    public final void wake() {
        wakeup.signal();
    }

    /** Counts a kick of the queue with index {@code index} (the thread's queues are few). */
    final void countKick(int index) {
        for (DeviceQueue q : queues) {
            if (q.index == index) {
                q.counters.increment(QueueCounters.KICKS);
            }
        }
    }
}
