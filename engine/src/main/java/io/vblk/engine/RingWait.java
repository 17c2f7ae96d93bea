package io.vblk.engine;

import io.vblk.aio.RingSleep;
import io.vblk.sys.EventFd;

/**
 * An I/O thread that sleeps in its back end's io_uring ({@link RingSleep}), as fio does, instead
 * of an epoll set: one {@code io_uring_enter(GETEVENTS, min_complete=1)} returns for a completion
 * or for a multishot poll on a kick eventfd or on the thread's wake-up eventfd. A wake-up by a
 * completion then costs one system call (the enter, which also posts cooperative completions)
 * instead of three ({@code epoll_wait}, the completion eventfd's read, an enter to post them),
 * and the kernel signals no eventfd per completion batch.
 *
 * <p>Chosen at thread start ({@link IoThread#start}) when the thread has its own OS thread,
 * reaps inline, and its back end is one io_uring ring that can ({@link
 * io.vblk.block.BlockDriver#sleepInRing()}); otherwise, or when {@link Tuning#ringSleep()} is
 * off, the thread keeps {@link EpollWait}. The no-lost-kick pattern is the caller's as before:
 * notifications re-enabled, rings re-checked, then {@link #await}; a kick or inbox signal after
 * the re-check posts a poll CQE, and the enter returns at once for a CQE already posted.
 *
 * <p>The wake-up eventfd is never read: a multishot poll fires for every write, read or not, so
 * the read epoll needed is a system call saved per inbox wake-up (its counter cannot saturate:
 * 2^64 - 2 signals).
 */
final class RingWait extends AbstractThreadWait {
    /** The wake-up eventfd's tag (queue indices are 0..65535). */
    private static final int TAG_WAKEUP = -1;

    private final RingSleep ring;

    /**
     * A wait in {@code backend}'s io_uring for a thread that can sleep there, else null (it keeps
     * its epoll set): the tuning allows it, the thread reaps its own completions ({@code
     * ownsThread} false: a dedicated completion thread waits for them instead) and the driver is
     * one ring that supports it. Called before the thread starts, so the ring's SQ is still its to
     * write; a shared thread keeps epoll (it nests the members' epoll descriptors).
     */
    static RingWait instead(Tuning tuning, boolean ownsThread, io.vblk.block.BlockDriver backend, DeviceQueue[] queues) {
        if (!tuning.ringSleep() || ownsThread) {
            return null;
        }
        // The wake-up eventfd first: once the ring has given up its completion eventfd there is
        // no going back to epoll, so nothing that can fail (EMFILE) may come after that.
        EventFd wakeup = EventFd.create(true);
        RingSleep ring = backend.sleepInRing();
        if (ring == null) {
            wakeup.close();
            return null;
        }
        return new RingWait(queues, ring, wakeup);
    }

    /** Sleeps in {@code ring}, woken through {@code wakeup} (which it then owns). */
    RingWait(DeviceQueue[] queues, RingSleep ring, EventFd wakeup) {
        super(queues, wakeup);
        this.ring = ring;
        ring.onWake(this::countKick);
        ring.watch(wakeup.fd(), TAG_WAKEUP);
    }

    @Override
    public void await(int timeoutMs) {
        // 0: only collect; the round reaps what is posted, so there is nothing to wait for.
        if (timeoutMs != 0) {
            ring.sleep(timeoutMs < 0 ? -1 : timeoutMs * 1_000_000L);
        }
    }

    /** Nothing to reset: the kernel no longer signals the completion eventfd, the ring's CQEs wake the sleep. */
    @Override
    public boolean rearmCompletions() {
        return false;
    }

    @Override
    public void watchKick(DeviceQueue q) {
        EventFd k = q.kick;
        if (k != null) {
            ring.watch(k.fd(), q.index);
        }
    }

    @Override
    public void unwatchKick(DeviceQueue q) {
        ring.unwatch(q.index);
    }

    /** The back end's ring closes with the back end (which cancels its polls); this closes the wake-up eventfd. */
    @Override
    public void close() {
        wakeup.close();
    }
}
