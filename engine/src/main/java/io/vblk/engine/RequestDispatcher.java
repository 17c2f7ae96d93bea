package io.vblk.engine;

import java.util.function.Predicate;

import io.vblk.block.BlockDriver;
import io.vblk.vring.DescriptorChain;
import io.vblk.vring.SplitQueue;

import static io.vblk.engine.RequestDispatcher.Phase.DISPATCHING;
import static io.vblk.engine.RequestDispatcher.Phase.NOTHING_IN_HAND;
import static io.vblk.engine.RequestDispatcher.Phase.PARSING;
import static io.vblk.engine.RequestDispatcher.Phase.POPPING;

/**
 * The request side of an I/O thread: pops chains from its running queues into preallocated
 * requests, parses them, hands them to the back end (or straight to the completion route when
 * nothing is to be done on disk) and charges the throttle. Owns the request pool, the parser,
 * the one reusable descriptor chain and the throttle state; I/O thread only, allocates nothing.
 */
final class RequestDispatcher {
    private final DeviceModel model;
    private final Throttle throttle;
    private final DeviceListener listener;
    private final BlockDriver backend;
    private final RequestPool pool;
    private final RequestParser parser;
    private final DescriptorChain chain;
    /**
     * Back-end slots that must be free before a pop: 1, or while a DISCARD / WRITE_ZEROES request
     * waits for room ({@link #waitingQueue}), its segment count: it takes one slot per range
     * segment at once (BlockDevice refuses a depth below the most segments, which would pop
     * nothing). Reserving the most segments before every pop cost reads and writes that many
     * slots minus one of the queue depth; only a range request that finds too few now waits.
     */
    private int slotsWanted = 1;
    /** The queue whose range request waits for {@link #slotsWanted} slots (its chain put back), or null. */
    private DeviceQueue waitingQueue;
    private CompletionRoute route;
    /** Attributes a caught fault by evidence (see {@link GuestFaults#attribute}); set once. */
    private Predicate<Throwable> attributor = e -> false;

    /** Where a pop loop is, for a fault that lands in it (see {@link #spare}). */
    enum Phase {
        /** No chain or request in hand: nothing to put back. */
        NOTHING_IN_HAND,
        /** A chain is being read from the ring: its avail position is rewound. */
        POPPING,
        /** A claimed request is being parsed: it goes back to the pool, its chain rewound. */
        PARSING,
        /** A request is being handed on: whoever holds it answers it. */
        DISPATCHING
    }

    RequestDispatcher(DeviceModel model, Throttle throttle, DeviceListener listener, BlockDriver backend) {
        this.model = model;
        this.throttle = throttle;
        this.listener = listener;
        this.backend = backend;
        int maxSegments = Math.max(1, model.segMax());
        this.pool = new RequestPool(backend.depth(), BlkRequest.dataCapacity(maxSegments));
        this.parser = new RequestParser(model);
        this.chain = new DescriptorChain(model.config().queueSize() + maxSegments + SplitQueue.CHAIN_SLACK_SEGMENTS);
    }

    /**
     * Whether a pop could take a chain now (a free request and the back-end slots of the worst
     * request, and no request left {@link BlkRequest#unanswered} by a shortage): the pop loop's
     * own condition, which a sleep re-check must use too, or it would see chains it cannot pop
     * and veto every sleep until a completion came (a busy loop).
     *
     * <p>While a request is unanswered nothing pops: it can be answered only once its back end
     * holds nothing (FaultRecovery#settleUnanswered), and a back end fed new requests all the
     * while (a guest's steady stream on any queue of the thread) never got there, so it waited
     * for ever. Not fed, the back end empties once the operations it held at the shortage come
     * back: that is the request's fence, however busy the device. The pause lasts as long as
     * those operations (rare: only after the JVM refused a direct buffer, when backing off is
     * what the pool needs anyway). One field read per pop.
     */
    boolean canPop() {
        return unanswered == 0 && pool.available() > 0 && backend.freeSlots() >= slotsWanted;
    }

    /** Where requests that never reach the back end complete; set once, before the first round. */
    void route(CompletionRoute value) {
        route = value;
    }

    /** Sets how a caught fault is attributed (the I/O thread's {@link GuestFaults#attribute}). */
    void attributor(Predicate<Throwable> value) {
        attributor = value;
    }

    /** Told of a direct-memory shortage caught in a pop loop (see {@link FaultRecovery#directMemoryShortage}); set once. */
    private java.util.function.Consumer<Throwable> shortage = e -> { };

    void shortage(java.util.function.Consumer<Throwable> value) {
        shortage = value;
    }

    RequestPool pool() {
        return pool;
    }

    /**
     * Whether a pop took the throttle's last admission, closing it (never set without a throttle,
     * nor by a stopping queue's pop): {@link SubmitPolicy#popQueues} takes it right after that
     * queue's pop and starts its next round at the queue after it. The device's queues share one
     * throttle, and a round pops them in order: left in one order, the first queue with chains
     * takes every admission and a later one waits for ever (s17e, {@code ThrottleFairnessTest}).
     * Set once per pop loop that closes the throttle, read once per queue and round.
     */
    private boolean throttleClosed;

    /** {@link #throttleClosed}, cleared. */
    boolean takeThrottleClosed() {
        boolean closed = throttleClosed;
        if (closed) {
            throttleClosed = false;
        }
        return closed;
    }

    /** Whether the rounds need the time (a throttle to charge). */
    boolean throttled() {
        return throttle != null;
    }

    /**
     * Pops every available chain of {@code q} that slots and the throttle allow, at most one
     * ring's worth (plus recovered requests); returns how many.
     */
    int popQueue(DeviceQueue q, long nowNs) {
        return popQueue(q, nowNs, Integer.MAX_VALUE);
    }

    /** As {@link #popQueue(DeviceQueue, long)}, popping at most {@code max} chains. */
    int popQueue(DeviceQueue q, long nowNs, int max) {
        // A stopping queue pops only its recovered requests, unthrottled: the stop answers an
        // avail index that counts them all, so they must run before it returns (see stopQueue).
        boolean running = q.state == QueueLifecycle.RUNNING;
        if (waitingQueue != null && !mayPopBeside(q)) {
            // Another queue's range request has the next free slots (never starved by reads).
            // This queue waits for those slots (a completion wakes the thread), not for the
            // throttle: a deadline left from an earlier round would, once passed, make the sleep
            // re-check see work, and the thread spin until the slots came free.
            q.throttledUntilNs = 0;
            return 0;
        }
        if (!running) {
            max = Math.min(max, q.resubmitCount);
        } else if (throttle != null) {
            long delay = throttle.delayNs(nowNs);
            if (delay > 0) {
                q.throttledUntilNs = nowNs + delay;
                q.counters.increment(QueueCounters.THROTTLED);
                return 0;
            }
            q.throttledUntilNs = 0;
        }
        // Never more than one ring's worth (and the recovered requests) in one loop, whatever the
        // caller asks: a request completed here frees its slot at once, and a guest re-posting
        // on each status would otherwise keep the loop going for ever (IoThread bounds a round).
        max = (int) Math.min(max, (long) Math.max(1, q.ring.size()) + q.resubmitCount);
        InflightTracker tracker = q.inflightTracker;
        if (tracker != null) {
            max = inflightBound(q, max);
        }
        int popped = 0;
        // Where the loop is, in locals (no memory traffic): a fault the JVM delivers here late,
        // from another device's memory, must not cost this queue the chain in hand (see spare).
        Phase phase = NOTHING_IN_HAND;
        int availBefore = 0;
        int resubmitBefore = 0;
        BlkRequest current = null;
        try {
            while (popped < max && canPop()) {
                availBefore = q.ring.nextAvail();
                resubmitBefore = q.resubmitCount;
                current = null;
                phase = POPPING;
                // Recovered in-flight requests of a previous backend go first, in their old order.
                int rc = q.resubmitCount > 0 ? q.ring.popHead(q.resubmit[q.resubmit.length - q.resubmitCount--], chain)
                        : q.ring.pop(chain);
                if (rc == 0) {
                    break;
                }
                io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.POP); // tests only: see FaultPoints
                if (rc < 0) {
                    quarantine(q, String.valueOf(q.ring.error()));
                    break;
                }
                BlkRequest r = pool.claim(); // stage CLAIMED until dispatch hands it on
                // Counted before it names its queue: a fault landing in between (reclaimStranded
                // then takes nothing off) leaves the count one high, which the quarantined queue's
                // drain gives up; the other order left it one low, and a drain returned with a
                // request in flight (irev2 HalfClaimedAttackTest).
                q.inflight++;
                io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.CLAIMING); // tests only: see FaultPoints
                r.queue = q;
                r.startNs = nowNs;
                popped++;
                current = r;
                phase = PARSING;
                r.type = -1; // a chain refused before its header was read counts as no type
                RequestParser.Outcome outcome = parser.parse(chain, r);
                if (r.pendingOps > 1 && outcome == RequestParser.Outcome.SUBMIT && isRange(r.type)) {
                    // Only a multi-segment range request needs more than the one slot canPop saw.
                    if (backend.freeSlots() < r.pendingOps) {
                        // Too few for all its segments at once: its chain goes back (only read so
                        // far) and it is popped again once that many are free; nothing else pops
                        // meanwhile, so reads cannot keep them taken. The rewind first (done
                        // again by spare if a late fault lands before the phase says so), the
                        // request after (reclaimStranded's if one lands in between).
                        slotsWanted = r.pendingOps;
                        waitingQueue = q;
                        q.ring.setNextAvail(availBefore);
                        q.resubmitCount = resubmitBefore;
                        popped--;
                        phase = NOTHING_IN_HAND;
                        q.inflight--;
                        pool.release(r);
                        current = null;
                        break;
                    }
                }
                // Before its I/O (InflightTracker's order), after the only point that puts the
                // chain back un-popped: a head put back is never recorded in flight.
                if (tracker != null) {
                    tracker.popped(chain.head());
                }
                phase = DISPATCHING;
                dispatch(r, outcome);
                io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.HANDING); // tests only: see FaultPoints
                if (r.stage == BlkRequest.CLAIMED) {
                    r.stage = BlkRequest.HANDED; // the back end's or the completion route's now
                }
                phase = NOTHING_IN_HAND;
                q.counters.popped(r.type, r.bytes);
                if (throttle != null && running) {
                    // Bytes moved between guest and disk: a DISCARD or WRITE_ZEROES range moves
                    // none, and charging its length (up to ~512 GiB) would stall the device.
                    boolean transfer = r.type == BlkRequestDescriptor.T_IN || r.type == BlkRequestDescriptor.T_OUT;
                    throttle.charge(nowNs, transfer ? r.bytes : 0);
                    if (throttle.delayNs(nowNs) > 0) {
                        throttleClosed = true; // the round after starts at the next queue (SubmitPolicy)
                        break;
                    }
                }
            }
        } catch (RuntimeException | Error e) {
            if (FaultRecovery.isDirectMemoryShortage(e) && q.state != QueueLifecycle.BROKEN
                    && sparedShortage(q, e, phase, current, availBefore, resubmitBefore)) {
                int kept = popped - (phase == PARSING ? 1 : 0);
                countPopped(q, kept);
                return kept;
            }
            if (attributor.test(e) && q.state != QueueLifecycle.BROKEN) {
                if (spare(q, phase, current, availBefore, resubmitBefore)) {
                    // Another memory's fault, delivered here late: this queue lost nothing.
                    return popped - (phase == PARSING ? 1 : 0);
                }
                listener.faultAttributed("queue " + q.index + " is quarantined where the fault landed all the same: it was"
                        + " handing a request on, which cannot be undone exactly");
            }
            if (phase == DISPATCHING && current != null && current.stage == BlkRequest.CLAIMED) {
                // The back end or the completion route may hold it already (the fault can land
                // at the return from its prepare): never back to the pool while its operation
                // may run, or another queue's request takes the slot and gets its completion
                // (irev2 HandedOnAttackTest). Held and counted until that completion, or until
                // the quarantined queue's drain gives it up with nothing in flight.
                current.stage = BlkRequest.HANDED;
            }
            // A fault in this queue's guest memory (or a bug, or a fault of other memory that
            // landed where this queue cannot be made whole): give back the request that never
            // reached the back end, and stop this queue only.
            reclaimStranded();
            String reason = (GuestFaults.isMemoryFault(e) ? "guest memory fault: " : "internal error: ") + e;
            q.faultReason = reason;
            quarantine(q, reason);
        }
        countPopped(q, popped);
        return popped;
    }

    private static boolean isRange(int type) {
        return type == BlkRequestDescriptor.T_DISCARD || type == BlkRequestDescriptor.T_WRITE_ZEROES;
    }

    /**
     * Whether {@code q} may pop while a range request waits: it is the waiting queue, or the
     * waiting queue can no longer pop it (stopped, reset, quarantined: the wait is dropped).
     * The waiting queue's turn ends the wait once the slots are free, whatever it then pops
     * (its range request comes first, and waits again if the guest made it longer; a guest that
     * took the chain away must not leave the others waiting while the thread spins on their
     * chains). Once per pop loop, never per request.
     */
    private boolean mayPopBeside(DeviceQueue q) {
        DeviceQueue w = waitingQueue;
        if (w == q) {
            if (canPop()) {
                waitingQueue = null;
                slotsWanted = 1;
            }
            return true;
        }
        if (w.state == QueueLifecycle.RUNNING || (w.state == QueueLifecycle.STOPPING && w.resubmitCount > 0)) {
            return false;
        }
        waitingQueue = null;
        slotsWanted = 1;
        return true;
    }

    private static void countPopped(DeviceQueue q, int popped) {
        if (popped > 0) {
            q.counters.add(QueueCounters.REQUESTS, popped);
            q.counters.increment(QueueCounters.BATCHES);
            q.counters.increment(QueueCounters.SUBMITS);
        }
    }

    /**
     * With an inflight tracker in dedicated mode the completion thread stores used.idx before
     * {@link InflightTracker#published} clears the batch's inflight flags; a head the guest
     * re-posts on seeing used.idx, popped (flag set) in between, would have its new flag cleared
     * and be lost by a crash. So: avail.idx first (an acquire load), then the completion side's
     * {@link DeviceQueue#publishing} flag (volatile). A re-post is in avail.idx only after the
     * guest saw used.idx, which was stored after the flag was set: if the idx read covers a
     * re-post, the flag read after it sees it set, or cleared after published() (whose stores
     * then happen-before our pop). So pop nothing while it is set, and never beyond the avail
     * index read (a later re-post may belong to a batch being published now); resubmissions
     * are not re-posts and come on top. Per round, not per request; x86 TSO keeps the loads and
     * the completion side's stores in order anyway, the acquire/volatile accesses keep the JIT
     * from reordering them.
     */
    private static int inflightBound(DeviceQueue q, int max) {
        int availIdx = q.ring.availIndexInRing(); // acquire
        if (q.publishing) {
            return 0; // popped next round
        }
        int ahead = (availIdx - q.ring.nextAvail()) & 0xffff;
        return (int) Math.min(max, (long) ahead + q.resubmitCount);
    }

    /**
     * A direct-memory shortage in {@code q}'s pop loop (a back end's prepare that could not get a
     * buffer): not the guest's doing, so {@code q} is not quarantined. Before the hand-over the
     * chain goes back to the ring ({@link #spare}) and is popped again later. At the hand-over the
     * request stays the back end's ({@link BlkRequest#HANDED}, counted in flight) and is marked
     * {@link BlkRequest#unanswered}: whether the prepare had taken it cannot be known, so it is
     * never given back while it may complete. It ends with its completion if the back end took
     * it, or IOERR once the back end has nothing in flight or pending (then nothing can complete
     * it: {@link FaultRecovery#settleUnanswered}; nothing pops meanwhile, see {@link #canPop}),
     * exactly once either way. Returns false where
     * neither holds (a request claimed that the loop does not know): the caller quarantines.
     */
    private boolean sparedShortage(DeviceQueue q, Throwable e, Phase phase, BlkRequest current, int availBefore,
                                   int resubmitBefore) {
        if (phase == DISPATCHING) {
            for (int i = 0, n = pool.size(); i < n; i++) {
                BlkRequest r = pool.get(i);
                if (r.stage == BlkRequest.CLAIMED && r != current) {
                    return false;
                }
            }
            if (current != null && current.stage == BlkRequest.CLAIMED) {
                current.stage = BlkRequest.HANDED;
                current.unanswered = true; // answered by its completion, or by settleUnanswered
                unanswered++;
            }
            shortage.accept(e);
            return true;
        }
        if (!spare(q, phase, current, availBefore, resubmitBefore)) {
            return false;
        }
        shortage.accept(e);
        return true;
    }

    /**
     * Requests whose prepare threw a shortage ({@link BlkRequest#unanswered}) since the last
     * {@link #failUnanswered}, some of which may have completed since: the rounds look for a
     * settled back end only while it is not zero (one field read per round otherwise).
     */
    private int unanswered;

    boolean hasUnanswered() {
        return unanswered > 0;
    }

    /**
     * Answers IOERR every request still waiting as {@link BlkRequest#unanswered}, once: the
     * caller has proved that nothing the back end holds can complete it (see {@link
     * FaultRecovery#settleUnanswered}). Its flag goes first, so it is never answered twice (the
     * dedicated route returns it to the pool only later). Returns how many it answered.
     */
    int failUnanswered() {
        int answered = 0;
        for (int i = 0, n = pool.size(); i < n; i++) {
            BlkRequest r = pool.get(i);
            if (r.unanswered && r.stage == BlkRequest.HANDED) {
                r.unanswered = false;
                r.immediateStatus = BlkRequestDescriptor.S_IOERR;
                route.completeImmediately(r);
                answered++;
            }
        }
        unanswered = 0;
        return answered;
    }

    /**
     * After a fault attributed by evidence to other memory landed in {@code q}'s pop loop:
     * puts back what the loop had in hand, so the queue loses nothing, and returns true; or
     * returns false when that cannot be known exactly (the request was being handed to the back
     * end or the completion route, or a request is claimed that the loop does not know), and the
     * caller quarantines {@code q} as before. Popping again is safe: the chain was only read (a
     * GET_ID string written by the parser is written again, the same), and an inflight region
     * has not recorded it yet (the tracker records a head only once it is parsed, just before
     * its dispatch).
     */
    private boolean spare(DeviceQueue q, Phase phase, BlkRequest current, int availBefore, int resubmitBefore) {
        if (phase == DISPATCHING) {
            return false;
        }
        for (int i = 0, n = pool.size(); i < n; i++) {
            BlkRequest r = pool.get(i);
            if (r.stage == BlkRequest.CLAIMED && !(phase == PARSING && r == current && r.queue == q)) {
                return false;
            }
        }
        if (phase == PARSING) {
            q.inflight--;
            pool.release(current);
        }
        if (phase != NOTHING_IN_HAND) {
            // The chain goes back to the ring (or to the resubmit list) and is popped again.
            q.ring.setNextAvail(availBefore);
            q.resubmitCount = resubmitBefore;
        }
        return true;
    }

    private void dispatch(BlkRequest r, RequestParser.Outcome outcome) {
        if (outcome == RequestParser.Outcome.SUBMIT) {
            int rc = prepare(r);
            if (rc == 0) {
                return;
            }
            // Nothing of this request reached the back end: fail it alone.
            r.immediateStatus = BlkRequestDescriptor.S_IOERR;
        } else if (outcome == RequestParser.Outcome.NO_STATUS) {
            r.statusAddress = -1;
        }
        route.completeImmediately(r);
    }

    private int prepare(BlkRequest r) {
        long offset = r.sector << BlkRequestDescriptor.SECTOR_SHIFT;
        switch (r.type) {
            case BlkRequestDescriptor.T_IN:
                r.pendingOps = 1;
                return backend.read(offset, r.data, r.slot);
            case BlkRequestDescriptor.T_OUT:
                r.pendingOps = 1;
                return backend.write(offset, r.data, r.slot);
            case BlkRequestDescriptor.T_FLUSH:
                r.pendingOps = 1;
                return backend.flush(r.slot);
            default:
                return prepareRanges(r);
        }
    }

    /** One back-end operation per DISCARD / WRITE_ZEROES segment; the request ends with the last. */
    private int prepareRanges(BlkRequest r) {
        boolean discard = r.type == BlkRequestDescriptor.T_DISCARD;
        int count = r.pendingOps;
        for (int i = 0; i < count; i++) {
            int base = i * BlkRequestDescriptor.SEGMENT_LENGTH;
            long sector = parser.segments().getLong(base + BlkRequestDescriptor.SEGMENT_SECTOR_OFFSET);
            long sectors = parser.segments().getInt(base + BlkRequestDescriptor.SEGMENT_NUM_SECTORS_OFFSET) & 0xFFFF_FFFFL;
            boolean unmap = (parser.segments().getInt(base + BlkRequestDescriptor.SEGMENT_FLAGS_OFFSET)
                    & BlkRequestDescriptor.SEGMENT_FLAG_UNMAP) != 0;
            long offset = sector << BlkRequestDescriptor.SECTOR_SHIFT;
            long length = sectors << BlkRequestDescriptor.SECTOR_SHIFT;
            int rc = discard ? backend.discard(offset, length, r.slot)
                    : backend.writeZeroes(offset, length, unmap, r.slot);
            if (rc != 0) {
                if (i == 0) {
                    return rc;
                }
                // Earlier segments are in flight: account for the ones that never will be.
                r.error = rc;
                r.pendingOps = i;
                return 0;
            }
        }
        return 0;
    }

    /** Gives a finished request back to the pool (I/O thread only). */
    void release(BlkRequest r) {
        if (r.stage == BlkRequest.FREE) {
            return; // already reclaimed after an exception: count it once
        }
        if (r.stage != BlkRequest.LOST) { // a lost one left its queue's count when it was given up
            r.queue.inflight--;
        }
        pool.release(r);
    }

    /**
     * Gives back every request claimed and never handed on: after an exception on the I/O
     * thread (a guest-memory fault the JVM delivers at a later point, see {@link GuestFaults},
     * or a bug) no request can legitimately be in that stage, and one left there would hold its
     * queue's in-flight count up forever (stop and close would never return).
     */
    void reclaimStranded() {
        for (int i = 0, n = pool.size(); i < n; i++) {
            BlkRequest r = pool.get(i);
            if (r.stage == BlkRequest.CLAIMED) {
                DeviceQueue q = r.queue;
                if (q != null) {
                    if (q.faultReason == null) {
                        q.faultReason = "a request was lost to an internal error";
                    }
                    q.inflight--;
                }
                pool.release(r);
            }
        }
    }

    /**
     * Gives up every request {@code q} still counts in flight (I/O thread, on a quarantined
     * queue whose drain found they can never complete, see {@link FaultRecovery#settleLost}): counts
     * them {@link QueueCounters#LOST} and zeroes the queue's in-flight count. With {@code free}
     * (the back end has nothing in flight: no I/O can touch their buffers) their slots go back
     * to the pool; without, they stay pinned as {@link BlkRequest#LOST} until a late completion
     * returns them. Returns how many were given up.
     */
    int giveUpLost(DeviceQueue q, boolean free) {
        for (int i = 0, n = pool.size(); i < n; i++) {
            BlkRequest r = pool.get(i);
            if (r.queue == q && (r.stage == BlkRequest.HANDED || r.stage == BlkRequest.CLAIMED)) {
                if (free) {
                    pool.release(r);
                } else {
                    r.stage = BlkRequest.LOST;
                }
            }
        }
        int lost = Math.max(0, q.inflight);
        q.counters.add(QueueCounters.LOST, lost);
        q.inflight = 0;
        return lost;
    }

    /** Stops {@code q} popping (sticky until a reset); its owner hears why first. */
    void quarantine(DeviceQueue q, String reason) {
        if (q.state.live()) {
            q.brokenReason = reason;
            q.counters.increment(QueueCounters.QUARANTINES);
            // The owner hears of it before anyone can observe BROKEN, so a poller that sees the
            // state knows the needs-reset report has gone out.
            listener.queueBroken(q.index, reason);
            q.state = QueueLifecycle.BROKEN;
        }
    }
}
