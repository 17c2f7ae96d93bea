package io.vblk.engine;

import io.vblk.block.BlockDriver;

/**
 * An I/O thread's side of the fault model ({@link GuestFaults}): what it does with a failure
 * caught in a round, in a command or beside the rounds of a shared thread, its evidence (the
 * memory tables its queues used) and suspect state ({@link FaultEvidence}), the reports to the
 * owner ({@link DeviceListener#faultAttributed}), and, for a drain, giving up requests a late
 * guest-memory fault lost ({@link #settleLost}). Owns no state of the round itself: it reads the queues, the back end and the completion route, and quarantines through
 * the dispatcher. Nothing here runs per request. I/O thread only.
 */
final class FaultRecovery {
    private final IoThread thread;
    private final DeviceQueue[] queues;
    private final BlockDriver backend;
    private final RequestDispatcher dispatcher;
    private final CompletionRoute route;
    /** The memory tables its queues used, for a late fault's evidence, and its suspect state (see {@link GuestFaults}). */
    private final FaultEvidence evidence = new FaultEvidence();
    /** Told how each fault was attributed ({@link #report}). */
    private final DeviceListener listener;

    FaultRecovery(IoThread thread, DeviceQueue[] queues, BlockDriver backend, RequestDispatcher dispatcher,
                  CompletionRoute route, DeviceListener listener) {
        this.thread = thread;
        this.queues = queues;
        this.backend = backend;
        this.dispatcher = dispatcher;
        this.route = route;
        this.listener = listener;
    }

    /** The memory tables its queues used and its suspect state (see {@link GuestFaults}). */
    FaultEvidence evidence() {
        return evidence;
    }

    /** Stops {@code q} popping (sticky until a reset); its owner hears why first. */
    void quarantine(DeviceQueue q, String reason) {
        dispatcher.quarantine(q, reason);
    }

    /** Tells the owner how a fault was attributed. */
    void report(String text) {
        try {
            listener.faultAttributed(text);
        } catch (RuntimeException e) {
            // an owner's log that fails must not turn a fault into a second one
        }
    }

    /**
     * A failure outside a pop loop: a bug, or a guest-memory fault. One attributed by evidence
     * to other memory (see {@link GuestFaults}) quarantines only the queues that use that
     * memory; this thread's queues then stay, but the fault may have cost a completion (in a
     * reap, a submit), so the thread turns suspect until they have nothing in flight. Anything
     * else stops this thread's queues.
     *
     * @return false when the failure was attributed by evidence to other memory only (none of
     *     this thread's queues is quarantined): it is not this device's, and a pending command
     *     it landed in does not count it against its bound (PendingCommands#MAX_FAILURES)
     */
    boolean caught(Throwable e) {
        dispatcher.reclaimStranded();
        if (isDirectMemoryShortage(e)) {
            directMemoryShortage(e);
            return true;
        } else if (GuestFaults.attribute(thread, e)) {
            evidence.suspect = true;
            for (DeviceQueue q : queues) {
                if (q.state == QueueLifecycle.BROKEN) {
                    return true;
                }
            }
            return false;
        } else {
            String reason = (GuestFaults.isMemoryFault(e) ? "guest memory fault: " : "internal error: ") + e;
            for (DeviceQueue q : queues) {
                dispatcher.quarantine(q, reason);
            }
            return true;
        }
    }

    /**
     * Whether {@code e} is the JVM refusing a direct buffer ({@code java.nio.Bits.reserveMemory}:
     * "Cannot reserve N bytes of direct buffer memory"): the pool every disk of the JVM shares
     * (-XX:MaxDirectMemorySize) is used up, by any disk. Neither the guest's doing nor a sign
     * that this device's state is damaged: the allocation failed before it changed anything.
     */
    static boolean isDirectMemoryShortage(Throwable e) {
        return e instanceof OutOfMemoryError
                && String.valueOf(e.getMessage()).toLowerCase(java.util.Locale.ROOT).contains("direct buffer memory");
    }

    /**
     * A direct-memory shortage caught in a round ({@link #isDirectMemoryShortage}): no queue is
     * quarantined (a healthy disk must not need a reset because another disk holds the pool), but
     * the failure may have cost a completion (inside a reap, a submit, a back end's prepare), so
     * the thread turns suspect as for a fault attributed elsewhere: a drain then gives up what
     * nothing can complete ({@link #settleLost}). Reported once per I/O thread: it may repeat
     * every round while the pool is full, and a log call per round is not allowed.
     */
    void directMemoryShortage(Throwable e) {
        evidence.suspect = true;
        if (!shortageReported) {
            shortageReported = true;
            report("direct memory exhausted on I/O thread " + thread.roleName() + " (" + e.getMessage()
                    + "; -XX:MaxDirectMemorySize, by default -Xmx, is shared by every disk): its queues go on;"
                    + " reported once");
        }
    }

    private boolean shortageReported;

    /**
     * A guest-memory fault the JVM delivered inside a command (BlockDevice's one-shot commands,
     * which then run again): handled as one in a round, outside a pop loop (see {@link #caught}).
     * I/O thread only.
     */
    void caughtInCommand(Throwable e) {
        caught(e);
    }

    /**
     * A failure a shared thread caught outside this member's isolated round: {@code here} when
     * it came from this member's own sleep checks (handled as one in its round), otherwise
     * attributed by evidence only, by the one member told to {@code attribute} (see
     * {@link #caughtUnplaced}).
     */
    void caughtBesideRound(Throwable e, boolean here, boolean attribute) {
        if (here) {
            caught(e);
        } else {
            caughtUnplaced(e, attribute);
        }
    }

    /**
     * A failure on a shared I/O thread that no member can be named for (it landed between
     * members' rounds): quarantines by evidence only ({@link GuestFaults#attribute}), and turns
     * this thread suspect, as a fault attributed elsewhere does, since it may have cost a
     * completion; never stops this member's queues on no evidence, since it may not be theirs.
     * The evidence covers every member of the shared thread, so one member {@code attribute}s.
     */
    void caughtUnplaced(Throwable e, boolean attribute) {
        dispatcher.reclaimStranded();
        if (attribute && !GuestFaults.attribute(thread, e)) {
            report("failure on shared I/O thread " + thread.roleName() + " outside any device's round, no device"
                    + " named by evidence; its devices go on: " + e);
        }
        evidence.suspect = true;
    }

    /**
     * Suspect (a fault attributed elsewhere landed outside a pop loop): once every queue of the
     * thread has nothing in flight, nothing was lost, and the thread is trusted again. Called
     * every round: one field read while the thread is not suspect.
     */
    void clearSuspectWhenSettled() {
        if (!evidence.suspect) {
            return;
        }
        for (DeviceQueue q : queues) {
            if (q.inflight != 0) {
                return;
            }
        }
        evidence.suspect = false;
    }

    /** The completion fence {@link #settleUnanswered} waits for, or {@link LostWatch#NO_FENCE}. */
    private long unansweredFence = LostWatch.NO_FENCE;

    /**
     * A round's look at requests whose back end's prepare threw a shortage ({@link
     * BlkRequest#unanswered}; called only while there are some). Whether the back end took such a
     * request cannot be known; if it did, its one completion comes like any other (and answers
     * it). So it is answered IOERR only once that can no longer happen: the back end reports
     * nothing in flight and nothing pending submit (the {@link BlockDriver} contract counts every
     * accepted request there until {@link BlockDriver#poll} delivered it, so a completion of it
     * was delivered before this look, and a late one cannot come), no write waits for a
     * write-through flush ({@code holding}), and a completion fence taken then has passed and
     * the route's returns were taken back (dedicated mode: a completion delivered before the
     * look has finished it and it is back in the pool). Never while the back end still has
     * work: an operation of it may still write into its buffers. A back-end slot the throwing
     * prepare took goes back then too ({@code reclaimLostSlots}: nothing in flight or pending).
     * The thread pops nothing until then ({@link RequestDispatcher#canPop}), so the back end gets
     * there once what it held at the shortage is back, even under a guest's steady stream (it
     * never did before: the request waited for ever). Not per request: a few reads per round,
     * only after a shortage.
     */
    void settleUnanswered(boolean holding) {
        if (holding || backend.inFlight() != 0 || backend.pendingSubmit() != 0) {
            unansweredFence = LostWatch.NO_FENCE; // looked at again from a later idle moment
            return;
        }
        if (unansweredFence == LostWatch.NO_FENCE) {
            unansweredFence = route.fence();
        }
        if (!route.passed(unansweredFence)) {
            return;
        }
        unansweredFence = LostWatch.NO_FENCE;
        route.reclaim();
        if (dispatcher.failUnanswered() > 0) {
            route.endOfBatch();
        }
        if (backend.inFlight() == 0 && backend.pendingSubmit() == 0) {
            backend.reclaimLostSlots();
        }
    }

    /** One drain's view of a quarantined queue across rounds (see {@link #settleLost}). */
    static final class LostWatch {
        private static final long NO_FENCE = Long.MIN_VALUE;
        private long fence = NO_FENCE;
        private int lastInflight = -1;
    }

    /**
     * Called by a drain (stop, drain, close) each round while {@code q} still counts requests in
     * flight or unpublished (I/O thread only). A guest-memory fault the JVM delivers late (see
     * {@link GuestFaults}) can land inside the back end's reap or submit, or between the reap
     * and the completion route, and lose a completion: the request then stays counted in
     * flight and the drain would wait forever. So, on a quarantined queue (the fault
     * quarantined it), or on any queue of a thread made suspect by a fault attributed elsewhere
     * ({@link FaultEvidence#suspect}: the queue is quarantined first, since it lost a request),
     * returns true once it has given such requests up as {@link QueueCounters#LOST} (the queue
     * stays quarantined: needs-reset), and the back end's slots they held go back
     * ({@code reclaimLostSlots}):
     * <ul>
     * <li>when the back end reports nothing in flight and nothing pending submit (so nothing
     *     can complete, and no I/O can touch their buffers: their slots go back to the pool);
     * </ul>
     * Never while the back end still reports work, however long the count has not moved: an
     * operation that is really still running (a long zeroing ahead of it on the thread pool, a
     * network server that stalls) may yet write into guest memory, and a drain that returned
     * would let the VMM unmap that memory under it (a SIGSEGV the JVM cannot survive). The aio
     * back ends derive that report from the kernel's and their queues' own indices, so a fault
     * landing inside them cannot leave it wrong (see {@link GuestFaults}; Linux AIO keeps one
     * narrow window, which would leave this drain waiting: a hang, not a crash).
     * Either way only after a completion fence has passed (dedicated mode: the completion
     * thread finished every batch handed to it) and its returns were taken back. A lost
     * request is never completed into guest memory.
     */
    boolean settleLost(DeviceQueue q, LostWatch w) {
        // A live queue of a suspect thread is looked at only for requests in flight: its
        // unpublished used entries are published by the rounds as usual.
        if (q.state != QueueLifecycle.BROKEN && (!evidence.suspect || q.inflight == 0)) {
            w.fence = LostWatch.NO_FENCE;
            w.lastInflight = -1;
            return false;
        }
        if (dispatcher.hasUnanswered()) {
            // A prepare threw a shortage: the rounds answer that request first, once nothing can
            // complete it (settleUnanswered); giving it up here would quarantine a healthy queue.
            return false;
        }
        if (q.inflight != w.lastInflight) {
            w.lastInflight = q.inflight;
            w.fence = LostWatch.NO_FENCE;
        }
        boolean idle = backend.inFlight() == 0 && backend.pendingSubmit() == 0;
        if (!idle) {
            w.fence = LostWatch.NO_FENCE;
            return false;
        }
        if (w.fence == LostWatch.NO_FENCE) {
            w.fence = route.fence();
            return false;
        }
        if (!route.passed(w.fence)) {
            return false;
        }
        route.reclaim();
        route.endOfBatch();
        if (q.state != QueueLifecycle.BROKEN && q.inflight == 0) {
            return false; // a suspect thread's queue that lost nothing: its drain goes on as usual
        }
        if (q.inflight > 0 && q.state != QueueLifecycle.BROKEN) {
            // Suspect thread: requests nothing can complete any more were lost to the fault
            // attributed elsewhere; this queue lost them, so it needs a reset after all.
            String reason = "a completion was lost to a guest memory fault delivered on this thread";
            q.faultReason = reason;
            dispatcher.quarantine(q, reason);
        }
        if (q.inflight > 0) {
            // Re-read: nothing was submitted since (the queue pops nothing), so idle still holds
            // unless the back end finished something of another queue meanwhile.
            boolean free = backend.inFlight() == 0 && backend.pendingSubmit() == 0;
            dispatcher.giveUpLost(q, free);
            if (free) {
                // The back end's slots of those lost completions are lost too: nothing is in
                // flight or pending, so every slot it still counts taken can go back.
                backend.reclaimLostSlots();
            }
        }
        // A used.idx publish a fault cut short stays undone: the queue's memory is not touched again.
        q.dirty = false;
        return true;
    }
}
