package io.vblk.engine;

import io.vblk.block.BlockDriver;
import io.vblk.vring.SplitQueue;

/**
 * How an {@link IoThread}'s round pops its queues and hands what it prepared to the back end:
 * the round's chain budget ({@link Tuning#submitBatch()}) and the queue the next round starts at,
 * the submissions counted, and one of four ways to pop a queue, chosen once when the thread is
 * built (so a round pays one virtual call per queue, no branching on knobs that are off):
 * <ul>
 * <li>the default: everything popped goes to the back end in one call at the round's end;
 * <li>{@link Tuning#subBatch()}: a submission, a reap and a publish every that many chains;
 * <li>{@link Tuning#submitChunk()}: a submission every that many operations, nothing published
 *     before the round's end;
 * <li>{@link Tuning#earlySignal()}: one early submission and publish per queue per round, when
 *     the guest awaits its next completion ({@link EarlySignal}, per queue).
 * </ul>
 * Its own class because this state (budget rotation, sub-batch and chunk counts, the early
 * points) is the pop-and-submit policy's, not the loop's; the four knobs are off by default.
 * I/O thread only; allocates nothing per round.
 */
abstract class SubmitPolicy {
    final DeviceQueue[] queues;
    final RequestDispatcher dispatcher;
    final BlockDriver backend;
    final WriteThrough writeThrough;
    final CompletionRoute route;
    /** The most chains one round pops ({@link Tuning#submitBatch()}; no limit: MAX_VALUE). */
    private final int submitBatch;
    /** Where the next round starts popping: after the queue a full round stopped in. */
    private int nextQueue;
    private long submittedBatches;
    /** Chains popped in this round since its last submission (sub-batches only). */
    int sinceSubmit;
    /** Operations reaped between this round's sub-batches (its work, for the idle strategy). */
    int reapedBetween;
    /** This round submitted a chunk before its end. */
    boolean chunkSubmitted;
    /** Rounds that published early to a guest awaiting its next completion (for tests and diagnostics). */
    long earlyPublishes;
    /**
     * The back end accepted to leave what it finishes inside {@code submit()} unsignalled: the
     * round reaps it at once ({@link #submitRest}; the thread checks before it sleeps) instead
     * of taking an eventfd round trip through epoll.
     */
    private final boolean reapsOnSubmit;

    SubmitPolicy(Tuning tuning, DeviceQueue[] queues, RequestDispatcher dispatcher, BlockDriver backend,
                 WriteThrough writeThrough, CompletionRoute route) {
        this.queues = queues;
        this.dispatcher = dispatcher;
        this.backend = backend;
        this.writeThrough = writeThrough;
        this.route = route;
        this.submitBatch = tuning.submitBatch() > 0 ? tuning.submitBatch() : Integer.MAX_VALUE;
        this.reapsOnSubmit = backend.reapOnSubmittingThread();
    }

    /** The policy {@code tuning} asks for (sub-batches before an early signal before chunks, as documented in {@link Tuning}). */
    static SubmitPolicy of(Tuning tuning, DeviceQueue[] queues, RequestDispatcher dispatcher, BlockDriver backend,
                           WriteThrough writeThrough, CompletionRoute route) {
        if (tuning.subBatch() != 0) {
            return new SubBatches(tuning, queues, dispatcher, backend, writeThrough, route);
        }
        if (tuning.earlySignal() != 0) {
            return new EarlySignals(tuning, queues, dispatcher, backend, writeThrough, route);
        }
        if (tuning.submitChunk() > 0) {
            return new Chunks(tuning, queues, dispatcher, backend, writeThrough, route);
        }
        return new WholeRound(tuning, queues, dispatcher, backend, writeThrough, route);
    }

    /**
     * Pops the running queues, at most {@link Tuning#submitBatch()} chains in all; a round that
     * ends on the budget, or in which the device's throttle closed, makes the next one start at
     * the queue after the one it stopped in, so that every queue gets its turn. Quarantines
     * queues the completion side found faulty.
     */
    final int popQueues(long nowNs) {
        int n = queues.length;
        int prepared = 0;
        sinceSubmit = 0;
        int start = nextQueue;
        for (int i = 0; i < n; i++) {
            int index = start + i < n ? start + i : start + i - n;
            DeviceQueue q = queues[index];
            if (q.faultReason != null && q.state != QueueLifecycle.BROKEN) {
                dispatcher.quarantine(q, q.faultReason); // caught on the completion side
            }
            if (q.state == QueueLifecycle.RUNNING && prepared < submitBatch) {
                // One ring's worth per queue per round, on every path. A request that completes
                // without the back end (UNSUPP, GET_ID, IOERR) writes its status and frees its
                // slot inside the pop loop, and completions published between sub-batches or
                // early let the guest post anew within the round: without the bound a guest
                // re-posting on each status keeps one round (the inbox's stop, drain and memory
                // commands, every other queue and every other device of a shared thread) waiting
                // for ever (rev13a). A round that stops here did work, so the thread does not
                // sleep: the next round pops the rest.
                prepared += popQueue(q, index, nowNs, submitBatch - prepared, Math.max(1, q.ring.size()));
                boolean closedThrottle = dispatcher.takeThrottleClosed(); // false unless throttled
                if (closedThrottle || prepared >= submitBatch) {
                    nextQueue = index + 1 < n ? index + 1 : 0;
                }
            } else if (q.state == QueueLifecycle.STOPPING && q.resubmitCount > 0 && prepared < submitBatch) {
                // A stop drains recovered requests too (BlockDevice.stopQueue).
                prepared += dispatcher.popQueue(q, nowNs, submitBatch - prepared);
            }
        }
        return prepared;
    }

    /** Pops at most {@code max} chains of running queue {@code q} (at {@code index}), within its ring's worth {@code bound}. */
    abstract int popQueue(DeviceQueue q, int index, long nowNs, int max, int bound);

    /** Operations reaped between this round's sub-batches, taken (the next round starts from 0). */
    final int takeReapedBetween() {
        int reaped = reapedBetween;
        reapedBetween = 0;
        return reaped;
    }

    /**
     * The round's end: submits what is still prepared, in one call; if this round submitted
     * anything and the back end finished some of it inside submit (the null back end, a refused
     * operation), reaps it now, so that it is published with the round's immediate completions
     * (one used.idx publish and interrupt) instead of after an eventfd write, an epoll wake-up and
     * another round. Returns how many operations finished so.
     */
    final int submitRest() {
        boolean submitted = chunkSubmitted;
        chunkSubmitted = false;
        if (backend.pendingSubmit() > 0) {
            submitTraced();
            submitted = true;
        }
        int finished = 0;
        if (submitted && reapsOnSubmit && backend.completionsReady()) {
            finished = backend.poll(writeThrough, dispatcher.pool().size());
            while (writeThrough.afterPoll()) {
                // The writes just finished need their flush, which may finish in submit too.
                submit();
                if (!backend.completionsReady()) {
                    break; // the flush's completion comes with a later poll
                }
                finished += backend.poll(writeThrough, dispatcher.pool().size());
            }
        }
        return finished;
    }

    /** One submission of what is prepared, counted and traced. */
    final void submitTraced() {
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.SUBMIT_START, backend.pendingSubmit());
        }
        backend.submit();
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.SUBMIT_END, backend.inFlight());
        }
        submittedBatches++;
    }

    /** One submission of what is prepared, counted. */
    final void submit() {
        backend.submit();
        submittedBatches++;
    }

    /** Submits what this round prepared so far, then reaps and publishes what has finished. */
    final void submitSubBatch() {
        sinceSubmit = 0;
        if (backend.pendingSubmit() > 0) {
            submit();
        }
        reapedBetween += backend.poll(writeThrough, dispatcher.pool().size());
        writeThrough.afterPoll(); // submitted with the next sub-batch or the round's end
        route.endOfBatch(); // this sub-batch's immediate completions and what was reaped
    }

    long submittedBatches() {
        return submittedBatches;
    }

    long earlyPublishes() {
        return earlyPublishes;
    }

    /** The early-publish point {@code position}'s queue uses next (for tests; early signals only). */
    int earlySignalChains(int position) {
        throw new IllegalStateException("no early signal (Tuning.earlySignal is 0)");
    }

    /** The default: a queue's chains are popped, and the round's end submits them all at once. */
    static final class WholeRound extends SubmitPolicy {
        WholeRound(Tuning tuning, DeviceQueue[] queues, RequestDispatcher dispatcher, BlockDriver backend,
                   WriteThrough writeThrough, CompletionRoute route) {
            super(tuning, queues, dispatcher, backend, writeThrough, route);
        }

        @Override
        int popQueue(DeviceQueue q, int index, long nowNs, int max, int bound) {
            return dispatcher.popQueue(q, nowNs, Math.min(max, bound));
        }
    }

    /**
     * {@link Tuning#subBatch()}: every that many chains popped in the round (over its queues) go
     * to the back end at once, and what finished meanwhile is reaped and published before popping
     * on: the disk starts on the first requests while the rest are parsed, and the guest gets
     * completions (and posts anew) within the round rather than once per round. One submission
     * and one publish per sub-batch.
     */
    static final class SubBatches extends SubmitPolicy {
        private final int subBatch;

        SubBatches(Tuning tuning, DeviceQueue[] queues, RequestDispatcher dispatcher, BlockDriver backend,
                   WriteThrough writeThrough, CompletionRoute route) {
            super(tuning, queues, dispatcher, backend, writeThrough, route);
            this.subBatch = tuning.subBatch();
        }

        @Override
        int popQueue(DeviceQueue q, int index, long nowNs, int max, int bound) {
            max = Math.min(max, bound);
            int popped = 0;
            while (popped < max && q.state == QueueLifecycle.RUNNING) {
                int want = Math.min(max - popped, subBatch - sinceSubmit);
                int got = dispatcher.popQueue(q, nowNs, want);
                popped += got;
                sinceSubmit += got;
                if (sinceSubmit >= subBatch) {
                    submitSubBatch();
                }
                if (got < want) {
                    break; // the ring is empty, the pool or the back end is full, or the throttle says wait
                }
            }
            return popped;
        }
    }

    /**
     * {@link Tuning#submitChunk()}: pops at most one ring's worth of a queue, handing the back end
     * every that many operations prepared (counted over the round's queues: what an earlier queue
     * left pending counts) as soon as they are, with nothing reaped or published between: the
     * round's end submits the rest and publishes once, as without chunks.
     */
    static final class Chunks extends SubmitPolicy {
        private final int submitChunk;

        Chunks(Tuning tuning, DeviceQueue[] queues, RequestDispatcher dispatcher, BlockDriver backend,
               WriteThrough writeThrough, CompletionRoute route) {
            super(tuning, queues, dispatcher, backend, writeThrough, route);
            this.submitChunk = tuning.submitChunk();
        }

        @Override
        int popQueue(DeviceQueue q, int index, long nowNs, int max, int bound) {
            max = Math.min(max, bound);
            int popped = 0;
            while (popped < max && q.state == QueueLifecycle.RUNNING) {
                int want = Math.min(max - popped, Math.max(1, submitChunk - backend.pendingSubmit()));
                int got = dispatcher.popQueue(q, nowNs, want);
                popped += got;
                if (backend.pendingSubmit() >= submitChunk) {
                    submitTraced();
                    chunkSubmitted = true;
                }
                if (got < want) {
                    break; // the ring is empty, the pool or the back end is full, or the throttle says wait
                }
            }
            return popped;
        }
    }

    /**
     * {@link Tuning#earlySignal()}: pops a queue's {@link EarlySignal} number of chains; if the
     * guest then waits for its very next completion (asked at this point, not at the round's
     * start: a guest re-arms its interrupt only after it has re-posted, and a polling I/O thread
     * sees the re-posts first), submits them, reaps and publishes what finished (the interrupt
     * goes out now, so the guest's wake-up overlaps the rest of the round), then pops the rest
     * as usual, and tells the queue's {@link EarlySignal} whether the guest had answered by then.
     * At most one early publish per queue per round; the round's end publishes the rest, and
     * {@link SplitQueue#publishUsed()} decides that interrupt as ever (none unless the guest
     * re-armed since).
     */
    static final class EarlySignals extends SubmitPolicy {
        /** When a round publishes once to a guest awaiting its next completion, per queue. */
        private final EarlySignal[] earlySignal;

        EarlySignals(Tuning tuning, DeviceQueue[] queues, RequestDispatcher dispatcher, BlockDriver backend,
                     WriteThrough writeThrough, CompletionRoute route) {
            super(tuning, queues, dispatcher, backend, writeThrough, route);
            earlySignal = new EarlySignal[queues.length];
            for (int i = 0; i < queues.length; i++) {
                earlySignal[i] = new EarlySignal(tuning.earlySignal(), SplitQueue.MAX_QUEUE_SIZE);
            }
        }

        @Override
        int earlySignalChains(int position) {
            return earlySignal[position].chains();
        }

        @Override
        int popQueue(DeviceQueue q, int index, long nowNs, int max, int bound) {
            EarlySignal early = earlySignal[index];
            int point = Math.min(early.chains(), q.ring.size());
            if (max <= point) {
                // A submit budget this small ends the round first (point is at most the ring's size,
                // so this pops within the round's bound).
                return dispatcher.popQueue(q, nowNs, max);
            }
            // Bounded after the budget test, not before: the ring's size is no budget, and a round
            // that pops fewer chains than the point is still one too short (EarlySignal).
            max = Math.min(max, bound);
            int got = dispatcher.popQueue(q, nowNs, point);
            if (got < point || q.state != QueueLifecycle.RUNNING) {
                if (got > 0) {
                    early.roundTooShort();
                }
                return got; // the ring is empty, the pool or back end is full, the throttle says wait, or it broke
            }
            if (!q.ring.driverAwaitsNextUsed()) {
                return got + dispatcher.popQueue(q, nowNs, max - got); // the guest is awake: one lump at the end
            }
            earlyPublishes++;
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.EARLY_PUBLISH, got);
            }
            int availAtPublish = q.ring.availIndexInRing();
            submitSubBatch();
            got += dispatcher.popQueue(q, nowNs, max - got);
            if (q.state == QueueLifecycle.RUNNING) {
                // Answered: re-posted, or re-armed for the next completion after taking the early ones.
                early.judged(q.ring.availIndexInRing() != availAtPublish || q.ring.driverAwaitsNextUsed());
            }
            return got;
        }
    }
}
