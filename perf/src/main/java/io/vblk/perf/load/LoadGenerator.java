package io.vblk.perf.load;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;

import org.HdrHistogram.Histogram;

import io.vblk.engine.RoundTrace;

/**
 * The benchmark's guest: one thread drives every {@link GuestQueue}, notifies the device only
 * when a ring asks for it, and waits for completions either by spinning on the used rings or by
 * sleeping until the device interrupts it.
 *
 * <p>Closed loop (the default): every slot is always in flight; a completion re-issues its slot
 * at once. A closed loop never issues late, so its latencies need no correction for coordinated
 * omission: each is measured from the moment its request was really issued. Open loop
 * ({@link Workload#rateIops()} &gt; 0): requests are due at a fixed rate, spread round-robin over
 * the queues; a request that finds no free slot waits for one, and its latency still counts
 * from the moment it was <em>due</em>. A device that falls behind the rate therefore shows the
 * queueing it causes, instead of hiding it by slowing the generator down (the coordinated
 * omission correction, done at the source rather than estimated afterwards).
 *
 * <p>Each pass reads the clock once: completions reaped in the pass are stamped with it, and so
 * are the closed loop's requests re-issued in their place (at 2 M requests a second, clock reads
 * count). Latency is "issued to seen by the guest", the figure a guest application observes.
 *
 * <p>Sleeping follows the virtio rule (2.7.10): re-enable interrupts, re-check the used ring,
 * and only then wait; after waking, interrupts are suppressed again while the guest is busy.
 * Allocation-free once running.
 */
public final class LoadGenerator {
    /** How long one wait may last before the guest looks again (also bounds a lost interrupt). */
    private static final long WAIT_SLICE_NS = 50_000_000L;
    /**
     * An open loop sleeps only until this long before the next request is due and spins the rest:
     * a timed sleep here wakes 50-100 us late, and lateness of the generator would count as the
     * device's latency.
     */
    private static final long SPIN_BEFORE_DUE_NS = 100_000L;
    /** No completion for this long, with requests outstanding, means the device is stuck. */
    private static final long STALL_NS = 10_000_000_000L;

    /** How the guest notifies the device (a vCPU's doorbell write, an ioeventfd write). */
    @FunctionalInterface
    public interface Doorbell {
        /** Tells the device that queue {@code queue} has new buffers. */
        void ring(int queue);
    }

    /** How the guest sleeps until an interrupt (the device's call) may have arrived. */
    @FunctionalInterface
    public interface InterruptWait {
        /** Returns when an interrupt arrived or after about {@code timeoutNs}; may return early. */
        void await(long timeoutNs);
    }

    /** Called on the guest thread at the edges of the measured window (to read CPU counters). */
    public interface Meter {
        /** The measured window begins. */
        void begin();

        /** The measured window ends. */
        void end();
    }

    /**
     * What one run measured.
     *
     * @param kicks  doorbell rings in the window (notifications the device asked for)
     * @param sleeps times the guest slept waiting for an interrupt in the window
     */
    public record Stats(long requests, long reads, long writes, double seconds, long errors, long kicks, long sleeps) {
        /** Kicks and sleeps per request, by JSON name. */
        public Map<String, Double> perIo() {
            Map<String, Double> m = new TreeMap<>();
            m.put("guest_kicks_per_io", requests > 0 ? kicks / (double) requests : Double.NaN);
            m.put("guest_sleeps_per_io", requests > 0 ? sleeps / (double) requests : Double.NaN);
            return m;
        }
    }

    /**
     * Whether the guest exposes each re-issued request at once (one avail.idx store per request,
     * as Linux's virtqueue_add_split) rather than once per pass; kicks are decided once per pass
     * either way. Process-wide, set once by the command before any run.
     */
    private static volatile boolean exposeEachRequest;

    private final GuestQueue[] queues;
    private final Doorbell doorbell;
    private final InterruptWait interruptWait;
    private final boolean polling;
    private final long intervalNs;
    private final AtomicLong completed = new AtomicLong();
    private long completedPlain;
    private long kicks;
    private long sleeps;
    private long nextDueNs;
    private int nextQueue;
    private boolean scheduling;

    /**
     * A generator for {@code workload} (its guest mode and rate) over {@code queues}.
     */
    public LoadGenerator(GuestQueue[] queues, Doorbell doorbell, InterruptWait interruptWait, Workload workload) {
        this.queues = queues.clone();
        this.doorbell = doorbell;
        this.interruptWait = interruptWait;
        this.polling = workload.guestPolls();
        this.intervalNs = workload.rateIops() > 0 ? Math.max(1, 1_000_000_000L / workload.rateIops()) : 0;
        for (GuestQueue q : queues) {
            q.driver().disableInterrupts();
            q.driver().exposeEachAdd(exposeEachRequest);
            q.openLoop(intervalNs > 0);
        }
    }

    /**
     * Makes the guests of every later run expose each request as it is added (true: a Linux
     * guest's avail.idx store per request) or once per pass (false).
     */
    public static void exposeEachRequest(boolean value) {
        exposeEachRequest = value;
    }

    /** See {@link #exposeEachRequest(boolean)}. */
    public static boolean exposesEachRequest() {
        return exposeEachRequest;
    }

    /** Requests completed so far (warm-up included), readable from any thread for a progress line. */
    public long completedSoFar() {
        return completed.get();
    }

    /**
     * Starts the queues (all slots in flight, or the schedule), runs {@code warmupNs} unmeasured,
     * then {@code runNs} measured (latencies into {@code latency}, {@code meter} called at both
     * edges), then drains: stops issuing and waits until every request has completed, so that
     * the device can be stopped cleanly.
     *
     * @throws IllegalStateException when the device corrupts a used ring or completes nothing for 10 s
     */
    public Stats run(long warmupNs, long runNs, Histogram latency, Meter meter) {
        long start = System.nanoTime();
        nextDueNs = start;
        scheduling = intervalNs > 0;
        for (GuestQueue q : queues) {
            q.fill(start);
        }
        schedule(start);
        publishAll();
        loop(start + warmupNs, null);
        long reads0 = reads();
        long writes0 = writes();
        long errors0 = errors();
        long kicks0 = kicks;
        long sleeps0 = sleeps;
        meter.begin();
        long from = System.nanoTime();
        loop(from + runNs, latency);
        long to = System.nanoTime();
        meter.end();
        long reads = reads() - reads0;
        long writes = writes() - writes0;
        Stats stats = new Stats(reads + writes, reads, writes, (to - from) / 1e9, errors() - errors0, kicks - kicks0,
                sleeps - sleeps0);
        drain();
        return stats;
    }

    private void loop(long endNs, Histogram latency) {
        long lastProgress = System.nanoTime();
        while (true) {
            long now = System.nanoTime();
            int reaped = 0;
            for (GuestQueue q : queues) {
                reaped += q.reap(now, latency);
            }
            if (RoundTrace.ON && reaped > 0) {
                RoundTrace.event(RoundTrace.GUEST_REAPED, reaped);
            }
            int issued = schedule(now);
            if (reaped > 0 || issued > 0) {
                publishAll();
            }
            if (reaped > 0) {
                completedPlain += reaped;
                completed.lazySet(completedPlain);
                lastProgress = now;
            }
            if (now >= endNs) {
                return;
            }
            if (reaped == 0 && issued == 0) {
                lastProgress = idle(now, lastProgress);
            }
        }
    }

    /** Open loop: issues every request due by {@code now} that finds a free slot; returns how many. */
    private int schedule(long now) {
        if (!scheduling) {
            return 0;
        }
        int issued = 0;
        while (nextDueNs <= now) {
            boolean placed = false;
            for (int tries = 0; tries < queues.length && !placed; tries++) {
                placed = queues[nextQueue].issueDue(nextDueNs);
                nextQueue = nextQueue + 1 == queues.length ? 0 : nextQueue + 1;
            }
            if (!placed) {
                break;
            }
            nextDueNs += intervalNs;
            issued++;
        }
        return issued;
    }

    private void publishAll() {
        for (GuestQueue q : queues) {
            if (q.publish()) {
                kicks++;
                if (RoundTrace.ON) {
                    RoundTrace.event(RoundTrace.GUEST_KICK, 0);
                }
                doorbell.ring(q.index());
            }
        }
    }

    /** Nothing happened this pass: spin or sleep. Returns the (possibly reset) time of last progress. */
    private long idle(long now, long lastProgress) {
        if (inFlight() == 0) {
            lastProgress = now;
        } else if (now - lastProgress > STALL_NS) {
            throw stalled();
        }
        // Due requests without a free slot wait for a completion, like everything else.
        long untilDue = scheduling && freeSlots() > 0 ? nextDueNs - now : Long.MAX_VALUE;
        if (polling || untilDue < SPIN_BEFORE_DUE_NS) {
            Thread.onSpinWait();
            return lastProgress;
        }
        boolean pending = false;
        for (GuestQueue q : queues) {
            pending |= q.driver().enableInterrupts();
        }
        if (!pending) {
            sleeps++;
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.GUEST_SLEEP, 0);
            }
            interruptWait.await(Math.min(WAIT_SLICE_NS, untilDue - SPIN_BEFORE_DUE_NS));
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.GUEST_WAKE, 0);
            }
        }
        for (GuestQueue q : queues) {
            q.driver().disableInterrupts();
        }
        return lastProgress;
    }

    private void drain() {
        scheduling = false;
        for (GuestQueue q : queues) {
            q.stopReissuing();
        }
        long lastProgress = System.nanoTime();
        while (inFlight() > 0) {
            long now = System.nanoTime();
            int reaped = 0;
            for (GuestQueue q : queues) {
                reaped += q.reap(now, null);
            }
            publishAll();
            if (reaped > 0) {
                lastProgress = now;
            } else {
                lastProgress = idle(now, lastProgress);
            }
        }
    }

    private IllegalStateException stalled() {
        StringBuilder sb = new StringBuilder("no completion for " + STALL_NS / 1_000_000_000L + " s:");
        for (GuestQueue q : queues) {
            sb.append(' ').append(q.driver()).append(" avail_event ").append(q.driver().availEvent())
                    .append(" used.idx ").append(q.driver().usedIdx()).append(';');
        }
        return new IllegalStateException(sb.toString());
    }

    private int freeSlots() {
        int n = 0;
        for (GuestQueue q : queues) {
            n += q.freeSlots();
        }
        return n;
    }

    private int inFlight() {
        int n = 0;
        for (GuestQueue q : queues) {
            n += q.inFlight();
        }
        return n;
    }

    private long reads() {
        long n = 0;
        for (GuestQueue q : queues) {
            n += q.readsCompleted();
        }
        return n;
    }

    private long writes() {
        long n = 0;
        for (GuestQueue q : queues) {
            n += q.writesCompleted();
        }
        return n;
    }

    private long errors() {
        long n = 0;
        for (GuestQueue q : queues) {
            n += q.errors();
        }
        return n;
    }
}
