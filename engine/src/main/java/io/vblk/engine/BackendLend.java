package io.vblk.engine;

import java.io.IOException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Lending a shared member's back end to another thread (a borrower), for a synchronous operation
 * that may wait for the disk or its server (an online resize's metadata update) and must not
 * wait inside a shared thread's round, where it would stop every other member. It owns the lend
 * state ({@link State}), the count of lend commands begun, the lend a borrower may have to take
 * back after giving up, and the lock that orders a borrower's hand-back against the thread's close
 * (a lent back end is never closed under its borrower). Its own class because this state is
 * written by two threads (the I/O thread pauses and lends, the borrower hands back) and has its
 * own protocol; the rounds only read {@link #state} (one volatile read each). Control path: no
 * allocation or lock per round.
 */
final class BackendLend {
    /** Where a member's back end is. */
    enum State {
        /** The rounds use it and pop the queues. */
        SERVING,
        /** A lend waits: the queues are not popped while what they have in flight finishes. */
        PAUSING,
        /** Another thread uses it: the rounds leave it (and the commands) alone. */
        LENT
    }

    /** How often a borrower waiting for its lend looks whether the device closed meanwhile. */
    private static final long POLL_NS = TimeUnit.SECONDS.toNanos(1);

    private final IoThread owner;
    /**
     * Written by the I/O thread to pause and lend, by the borrower to hand it back (the volatile
     * write and read order the borrower's use before the I/O thread's).
     */
    volatile State state = State.SERVING;
    /** Lend commands begun and not yet finished (lent or cancelled); I/O thread only. */
    private int lendsWaiting;
    /**
     * The future of the lend that set {@link State#LENT} last: a borrower that gives up
     * recognises a lend of its own that a late guest-memory fault cut off before it was completed.
     */
    private volatile CompletableFuture<Void> lentTo;
    /**
     * Orders a borrower's {@link #giveBack} against the owner's close (and the owner's list of
     * actions after its end): a lent back end is never closed under its borrower. Control path only.
     */
    final Object lock = new Object();
    /** The owner's close ran while the back end was lent: the borrower closes it on return (under {@link #lock}). */
    private boolean closeOnReturn;

    BackendLend(IoThread owner) {
        this.owner = owner;
    }

    /**
     * Lends the owner's back end to the calling thread: its queues stop being popped, a command
     * re-run each round (never blocking the thread) waits until what they have in flight has
     * completed and been published, and from then on the owner's rounds leave the back end alone
     * until {@link #giveBack}. Shared members only (their rounds run on the shared thread, which
     * waits in an {@link EpollWait}).
     *
     * @throws IOException when requests in flight did not finish within {@code timeoutNs}
     *         (nothing lent: the queues serve on)
     */
    void lend(long timeoutNs) throws IOException {
        if (!owner.isShared()) {
            throw new IllegalStateException("only a shared thread's member lends its back end");
        }
        CompletableFuture<Void> lent = new CompletableFuture<>();
        AtomicBoolean cancelled = new AtomicBoolean();
        owner.submitCommand(new InboxEvent.Command() {
            /** Counted in lendsWaiting (each lend takes itself out once, whichever way it ends). */
            private boolean counted;
            private boolean begun;

            @Override
            public boolean run(IoThread t) {
                // Never runs while LENT (the owner's runCommand): a second lend waits for the
                // first one's return, and pauses the queues anew once it runs again.
                if (lent.isDone()) {
                    // Run again after a late guest-memory fault landed past the lend: it must not
                    // lend a second time with no borrower to hand it back.
                    return true;
                }
                if (!begun) {
                    begun = true;
                    counted = true;
                    lendsWaiting++;
                }
                if (cancelled.get()) {
                    uncount(); // no other lend waiting: the queues serve again
                    lent.completeExceptionally(new IOException("requests in flight did not finish in time"));
                    return true;
                }
                state = State.PAUSING;
                for (DeviceQueue q : t.queues()) {
                    if (q.inflight > 0 || q.dirty) {
                        return false;
                    }
                }
                if (t.backend().inFlight() > 0 || t.backend().pendingSubmit() > 0 || t.route().hasReturns()) {
                    return false;
                }
                t.flushCompletions();
                t.backendLent(true);
                lentTo = lent; // before LENT: see the borrower's give-up
                state = State.LENT;
                if (counted) {
                    counted = false;
                    lendsWaiting--;
                }
                lent.complete(null);
                return true;
            }

            @Override
            public void abandon(Throwable cause) {
                // Given up after throwing in every run (I/O thread). Lent already (a throw after
                // LENT: it never runs again while lent): the borrower's, as if it had said so.
                if (lent.isDone() || (lentTo == lent && state == State.LENT)) {
                    lent.complete(null);
                    return;
                }
                // Otherwise the queues must not stay paused for a lend that will never come (a
                // PAUSING member pops nothing), and the borrower is told now, not at its deadline.
                uncount();
                lent.completeExceptionally(new IOException("the I/O thread gave up lending its driver", cause));
            }

            private void uncount() {
                if (counted) {
                    counted = false;
                    if (--lendsWaiting == 0 && state == State.PAUSING) {
                        state = State.SERVING; // no other lend waits for the queues to drain
                    }
                }
            }
        });
        long deadline = System.nanoTime() + timeoutNs;
        String failure;
        Throwable cause = null;
        while (true) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                failure = "requests in flight did not finish in " + TimeUnit.NANOSECONDS.toSeconds(timeoutNs) + " s";
                break;
            }
            try {
                lent.get(Math.min(left, POLL_NS), TimeUnit.NANOSECONDS);
                return; // lent: the caller's until giveBack
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                failure = "interrupted while the I/O thread drained for a driver step";
                cause = e;
                break;
            } catch (ExecutionException e) {
                failure = "the I/O thread did not lend its driver";
                cause = e.getCause();
                break;
            } catch (TimeoutException e) {
                if (owner.ended()) {
                    // Closed meanwhile (its thread let this member go): the command never runs.
                    failure = "the device closed before its I/O thread lent its driver";
                    break;
                }
            }
        }
        // Given up. The command cancels at its next run; if it lent already (or lends in the run
        // that reads the flag too late), the driver is handed back at once, never left lent.
        cancelled.set(true);
        if (lentTo == lent && state == State.LENT) {
            // It lent, but a late fault kept it from saying so (commands do not run while LENT,
            // so it never will): hand the driver back now rather than leave the member lent.
            lent.complete(null);
        }
        lent.thenRun(this::giveBack);
        if (!owner.ended()) {
            owner.wakeIfSleeping();
        }
        throw new IOException(failure, cause);
    }

    /** Lend commands begun and not yet finished (for tests; I/O thread only). */
    int lendsWaiting() {
        return lendsWaiting;
    }

    /**
     * Hands the back end lent by {@link #lend} back: the owner's rounds use it and pop its queues
     * again, from the next round on (woken now). If the owner closed meanwhile, closes it now.
     */
    void giveBack() {
        synchronized (lock) {
            if (closeOnReturn) {
                // The device closed while lent: its shutdown left the back end (and the epoll set,
                // the route) to the borrower, who is done with them only now.
                closeOnReturn = false;
                owner.end().closeNow(Deadlines.NO_DEADLINE);
                return;
            }
            owner.backendLent(false); // before SERVING: commands may use the epoll set then
            state = State.SERVING;
            // Wakes the thread (its queues may have gained requests meanwhile) without blocking on
            // a full inbox: an empty kick, which a round that polls every queue takes anyway.
            owner.kick(-1);
        }
    }

    /**
     * The owner closes (under {@link #lock}): true when the back end is lent (a hand-over's
     * inactivate while export.remove closes the device), and the close is left to {@link
     * #giveBack}, since closing the driver now would free it under the borrower; until then the
     * thread has not ended.
     */
    boolean closeOnReturnIfLent() {
        if (state == State.LENT) {
            closeOnReturn = true;
            return true;
        }
        return false;
    }
}
