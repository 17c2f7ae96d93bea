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
final class EpollWait extends AbstractThreadWait {
    private static final int TAG_WAKEUP = (1 << 16) + 1;
    /** Completion source {@code i} of the driver is tagged {@code TAG_COMPLETIONS + i}. */
    private static final int TAG_COMPLETIONS = 1 << 20;

    private final BlockDriver backend;
    private final Epoll epoll;
    /**
     * The kick descriptor each watching queue registered, by queue index: an embedder may give
     * two queues of one thread the same kick eventfd, and epoll holds one registration per
     * descriptor, so one queue's unwatch would otherwise stop the other's kicks too (a
     * descriptor leaves the set with its last watcher). Control path only (queue start, stop,
     * kick change).
     */
    private final java.util.Map<Integer, Integer> kickOfQueue = new java.util.HashMap<>();

    EpollWait(DeviceQueue[] queues, BlockDriver backend) {
        super(queues, EventFd.create(true));
        this.backend = backend;
        this.epoll = new Epoll(queues.length + 1 + backend.completionSources());
        epoll.add(wakeup.fd(), Linux.EPOLLIN, TAG_WAKEUP);
        for (int i = 0, n = backend.completionSources(); i < n; i++) {
            epoll.add(backend.completionFd(i), Linux.EPOLLIN, TAG_COMPLETIONS + i);
        }
    }

    /** The epoll descriptor (a {@link SharedIoThread} nests it in its own set). */
    int fd() {
        return epoll.fd();
    }

    /** Waits up to {@code timeoutMs} (-1: no limit, 0: only collects) and acknowledges what woke it. */
    @Override
    public void await(int timeoutMs) {
        int ready = epoll.await(timeoutMs);
        for (int i = 0; i < ready; i++) {
            acknowledge((int) epoll.data(i));
        }
    }

    /**
     * While true, the back end is lent to another thread ({@link IoThread#lendBackend}): its
     * completion sources are that thread's to acknowledge, not this one's.
     */
    private volatile boolean backendLent;

    /**
     * Lends the back end's completion sources away, or takes them back: while lent they leave
     * this epoll set, since a level-triggered eventfd this thread may not acknowledge (the
     * borrower's own metadata I/O signals it) would wake it again and again; a pending signal
     * wakes it once they are back. Control path (a syscall per source); never concurrently with
     * another change of this set (commands do not run while the back end is lent).
     */
    void backendLent(boolean value) {
        if (value == backendLent) {
            return;
        }
        // The flag changes only once every source is out (or back): a late guest-memory fault in
        // the loop runs the lend again, which must remove what is still watched (remove takes
        // ENOENT, watch EEXIST).
        for (int i = 0, n = backend.completionSources(); i < n; i++) {
            if (value) {
                epoll.remove(backend.completionFd(i));
            } else {
                epoll.watch(backend.completionFd(i), Linux.EPOLLIN, TAG_COMPLETIONS + i);
            }
        }
        backendLent = value;
    }

    /** The back end's, unless it is lent (its sources are then the borrower's to acknowledge). */
    @Override
    public boolean rearmCompletions() {
        return !backendLent && backend.rearmCompletions();
    }

    private void acknowledge(int tag) {
        if (tag == TAG_WAKEUP) {
            wakeup.read();
        } else if (tag >= TAG_COMPLETIONS) {
            if (!backendLent) {
                backend.acknowledge(tag - TAG_COMPLETIONS);
            }
        } else {
            // Kick eventfds are edge-triggered and never read: a frontend's kick fd shares its
            // open file description with us, may be blocking, and a read could then hang this
            // thread; every write raises a new edge anyway, and it saves a syscall per wake-up.
            countKick(tag);
        }
    }

    /** Starts watching {@code q}'s kick eventfd (I/O thread only). */
    @Override
    public void watchKick(DeviceQueue q) {
        EventFd k = q.kick;
        if (k != null) {
            // Watched again even when shared: the same number may now name another file (epoll
            // then holds one registration per file); the tag names the last queue to watch it,
            // which only the kick counters see (a round pops every queue).
            epoll.watch(k.fd(), Linux.EPOLLIN | Linux.EPOLLET, q.index);
            Integer before = kickOfQueue.put(q.index, k.fd());
            if (before != null && before != k.fd() && !kickOfQueue.containsValue(before)) {
                epoll.remove(before); // watched again with another descriptor, without an unwatch
            }
        }
    }

    /** Stops watching {@code q}'s kick eventfd (I/O thread only). */
    @Override
    public void unwatchKick(DeviceQueue q) {
        Integer watched = kickOfQueue.remove(q.index);
        EventFd k = q.kick;
        int fd = watched != null ? watched : k != null ? k.fd() : -1;
        if (fd >= 0 && !kickOfQueue.containsValue(fd)) {
            epoll.remove(fd);
        }
    }

    @Override
    public void close() {
        epoll.close();
        wakeup.close();
    }
}
