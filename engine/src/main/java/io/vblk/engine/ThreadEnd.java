package io.vblk.engine;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import io.vblk.block.BlockDriver;

/**
 * The end of an {@link IoThread}'s life: who closes its resources (the completion route, the back
 * end, the epoll set or ring wait) and when, whether it has ended, and the actions waiting for it
 * to end with its back end drained. Several threads may end it, so the decision has rules of its
 * own: shutdown, after joining a dedicated thread; the thread itself, after its last round, when
 * shutdown gave up waiting ({@link Exit}); a borrower handing back a back end lent across the
 * close ({@link BackendLend}); a short-lived closer after a late detach from a shared thread.
 * Closes run under the lend lock ({@link BackendLend#lock}), so a lent back end is never closed
 * under its borrower. Control path only.
 */
final class ThreadEnd {
    /** Who closes the resources of a dedicated thread: shutdown, or the thread if shutdown gave up waiting. */
    private enum Exit {
        /** The thread runs: shutdown closes them once it has joined. */
        RUNS,
        /** The thread left its loop in time: shutdown closes them. */
        EXITED,
        /** Shutdown gave up waiting for the thread's last round: the thread closes them when it ends. */
        ABANDONED
    }

    private final IoThread owner;
    private final BackendLend lender;
    private final BlockDriver backend;
    private final CompletionRoute route;
    private final AtomicReference<Exit> exit = new AtomicReference<>(Exit.RUNS);
    /** Set once the thread runs no round or command again and its resources were closed (either by shutdown or by the thread). */
    private volatile boolean ended;
    /** {@link #whenEndedDrained} actions waiting for the thread to end (under the lend lock). */
    private List<Runnable> afterEnd;

    ThreadEnd(IoThread owner, BackendLend lender, BlockDriver backend, CompletionRoute route) {
        this.owner = owner;
        this.lender = lender;
        this.backend = backend;
        this.route = route;
    }

    /** How long a shutdown waits for a dedicated thread's last round (tests shorten it). */
    long shutdownWaitMs = 10_000;

    /**
     * Shutdown's second half, once the thread was told to stop and woken: waits for a dedicated
     * {@code thread} (null: none; the caller itself: no wait) to leave its loop, by {@code
     * deadlineNs} and at most {@link #shutdownWaitMs}, then closes the resources ({@link #close}).
     * A thread still in a round after that wait (a stalled back end call, a guest that kept the
     * round busy) closes them itself when the round ends: closing the back end now would unmap
     * its ring under that round.
     */
    void joinThenClose(Thread thread, long deadlineNs) {
        long joinMs = deadlineNs == Deadlines.NO_DEADLINE ? shutdownWaitMs
                : Math.min(shutdownWaitMs, Math.max(1, TimeUnit.NANOSECONDS.toMillis(Deadlines.leftNs(deadlineNs))));
        joinQuietly(thread, joinMs);
        if (thread != null && thread != Thread.currentThread() && thread.isAlive() && exit.compareAndSet(Exit.RUNS, Exit.ABANDONED)) {
            System.getLogger(IoThread.class.getName()).log(System.Logger.Level.WARNING,
                    thread.getName() + " still runs a round after shutdown's wait: it closes its back end when the round ends");
            return;
        }
        close(deadlineNs);
    }

    /** Joins {@code t} for at most 10 s, unless it is null or the caller; an interrupt is kept, not thrown. */
    static void joinQuietly(Thread t) {
        joinQuietly(t, 10_000);
    }

    private static void joinQuietly(Thread t, long ms) {
        if (t == null || t == Thread.currentThread()) {
            return;
        }
        try {
            t.join(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** The thread left its loop: true when shutdown closes the resources, false when the thread must (shutdown gave up). */
    boolean exitedInTime() {
        return exit.compareAndSet(Exit.RUNS, Exit.EXITED);
    }

    /**
     * Closes the resources by {@code deadlineNs} ({@link Deadlines}), unless the back end is lent:
     * then the borrower closes them when it hands it back, and until then the thread has not ended.
     */
    void close(long deadlineNs) {
        synchronized (lender.lock) {
            if (lender.closeOnReturnIfLent()) {
                return;
            }
            closeNow(deadlineNs);
        }
    }

    /**
     * Called on the shared thread when it applies a detach its closer stopped waiting for: hands
     * the resources the closer left to a short-lived daemon thread, which closes them. Never on
     * the shared thread itself: a back end's close waits for its stuck I/O however short the
     * deadline (a qcow2 driver at least its own-work floor per chain level, an NBD back end its
     * helper's join), and every other member's rounds would stall that long. The member is
     * already off the shared thread's rounds and epoll set; the lend lock still orders this close
     * against a borrower's hand-back. The close waits for nothing beyond what the back end
     * insists on: what the kernel still holds goes to its undrained close. Actions waiting for
     * the end ({@link #whenEndedDrained}) then run on that closing thread.
     */
    void closeDetached() {
        String role = owner.roleName();
        Thread closer = new Thread(() -> {
            try {
                close(Deadlines.after(0));
            } catch (RuntimeException e) {
                System.getLogger(IoThread.class.getName()).log(System.Logger.Level.WARNING,
                        role + ": closing a device detached late failed", e);
            }
        }, "vblk-late-detach-close-" + role);
        closer.setDaemon(true);
        closer.start();
    }

    /** Closes the route, the back end and the epoll set now, by {@code deadlineNs} (under the lend lock). */
    void closeNow(long deadlineNs) {
        try {
            route.close();
            if (deadlineNs == Deadlines.NO_DEADLINE) {
                backend.close();
            } else {
                backend.closeWithin(Deadlines.leftNs(deadlineNs));
            }
            owner.closeWait();
        } finally {
            ended = true;
            List<Runnable> waiting = afterEnd;
            afterEnd = null;
            if (waiting != null) {
                for (Runnable action : waiting) {
                    backend.whenDrained(action);
                }
            }
        }
    }

    /**
     * Runs {@code action} once {@link #endedDrained()} holds: at once when it does, else when the
     * thread has ended and its driver's last back end with operations still in the kernel is
     * released ({@link BlockDriver#whenDrained}), on the thread that ends or releases it; never
     * if that never happens. Control path.
     */
    void whenEndedDrained(Runnable action) {
        synchronized (lender.lock) {
            if (!ended) {
                if (afterEnd == null) {
                    afterEnd = new ArrayList<>();
                }
                afterEnd.add(action);
                return;
            }
        }
        backend.whenDrained(action);
    }

    /** Whether the thread has ended for good: a command submitted now never runs. */
    boolean ended() {
        return ended;
    }

    /** Whether it has ended and its back end closed drained: nothing of it can reach guest memory any more. */
    boolean endedDrained() {
        return ended && backend.closedDrained();
    }
}
