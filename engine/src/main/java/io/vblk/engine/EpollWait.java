package io.vblk.engine;

import io.vblk.block.BlockDriver;
import io.vblk.sys.Epoll;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;

/**
 * Where an I/O thread sleeps in the kernel: one epoll set over its queues' kick eventfds
 * (edge-triggered, never read), its back end's completion sources and a wake-up eventfd that
 * other threads signal for inbox events, but only while the thread is marked sleeping (a
 * syscall per kick saved while it is awake). The I/O thread owns it; {@link #wakeIfSleeping()}
 * may be called from any thread.
 */
final class EpollWait implements ThreadWait {
    private static final int TAG_WAKEUP = (1 << 16) + 1;
    /** Completion source {@code i} of the driver is tagged {@code TAG_COMPLETIONS + i}. */
    private static final int TAG_COMPLETIONS = 1 << 20;

    private final DeviceQueue[] queues;
    private final BlockDriver backend;
    private final Epoll epoll;
    private final EventFd wakeup;
    private volatile boolean sleeping;

    EpollWait(DeviceQueue[] queues, BlockDriver backend) {
        this.queues = queues;
        this.backend = backend;
        this.epoll = new Epoll(queues.length + 1 + backend.completionSources());
        this.wakeup = EventFd.create(true);
        epoll.add(wakeup.fd(), Linux.EPOLLIN, TAG_WAKEUP);
        for (int i = 0, n = backend.completionSources(); i < n; i++) {
            epoll.add(backend.completionFd(i), Linux.EPOLLIN, TAG_COMPLETIONS + i);
        }
    }

    /** The epoll descriptor (a {@link SharedIoThread} nests it in its own set). */
    int fd() {
        return epoll.fd();
    }

    /**
     * Marks the thread sleeping (or awake). The volatile store pairs with the read in
     * {@link #wakeIfSleeping()}: a publisher either sees the mark and signals, or published
     * before the thread's last re-check of its inbox.
     */
    @Override
    public void sleeping(boolean value) {
        sleeping = value;
    }

    /** Wakes the thread if it is marked sleeping (any thread). */
    @Override
    public void wakeIfSleeping() {
        if (sleeping) {
            wakeup.signal();
        }
    }

    /** Wakes the thread whatever it is doing (shutdown). */
    @Override
    public void wake() {
        wakeup.signal();
    }

    /** Waits up to {@code timeoutMs} (-1: no limit, 0: only collects) and acknowledges what woke it. */
    @Override
    public void await(int timeoutMs) {
        int ready = epoll.await(timeoutMs);
        for (int i = 0; i < ready; i++) {
            acknowledge((int) epoll.data(i));
        }
    }

    private void acknowledge(int tag) {
        if (tag == TAG_WAKEUP) {
            wakeup.read();
        } else if (tag >= TAG_COMPLETIONS) {
            backend.acknowledge(tag - TAG_COMPLETIONS);
        } else {
            // Kick eventfds are edge-triggered and never read: a frontend's kick fd shares its
            // open file description with us, may be blocking, and a read could then hang this
            // thread; every write raises a new edge anyway, and it saves a syscall per wake-up.
            for (DeviceQueue q : queues) {
                if (q.index == tag) {
                    q.counters.increment(QueueCounters.KICKS);
                }
            }
        }
    }

    /** Starts watching {@code q}'s kick eventfd (I/O thread only). */
    @Override
    public void watchKick(DeviceQueue q) {
        EventFd k = q.kick;
        if (k != null) {
            epoll.watch(k.fd(), Linux.EPOLLIN | Linux.EPOLLET, q.index);
        }
    }

    /** Stops watching {@code q}'s kick eventfd (I/O thread only). */
    @Override
    public void unwatchKick(DeviceQueue q) {
        EventFd k = q.kick;
        if (k != null) {
            epoll.remove(k.fd());
        }
    }

    @Override
    public void close() {
        epoll.close();
        wakeup.close();
    }
}
