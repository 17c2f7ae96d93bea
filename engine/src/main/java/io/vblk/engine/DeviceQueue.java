package io.vblk.engine;

import org.HdrHistogram.Histogram;
import org.HdrHistogram.SingleWriterRecorder;

import io.vblk.hostmem.DirtyLog;
import io.vblk.sys.EventFd;
import io.vblk.vring.QueueState;
import io.vblk.vring.SplitQueue;

/**
 * One request queue of a device: its split ring, kick and interrupt, lifecycle state, counters
 * and latency histogram. The ring and the state belong to the queue's I/O thread; the control
 * plane changes them only through commands run on that thread.
 */
final class DeviceQueue {
    private static final long HIGHEST_LATENCY_NS = 60_000_000_000L;
    /**
     * Two significant digits: 1% resolution, enough for the percentiles export.stats and the
     * metrics show and for the buckets of {@link LatencyBuckets}. A queue holds four histograms
     * (the recorder's two, the interval and the total): at three digits each was a 208 KiB
     * {@code long[]}, 832 KiB a queue, most of an idle export's memory; at two, 30 KiB each.
     * The bench measures latency with its own histograms, at three digits.
     */
    static final int LATENCY_DIGITS = 2;

    final int index;
    final SplitQueue ring;
    final QueueCounters counters = new QueueCounters();
    private final SingleWriterRecorder recorder = new SingleWriterRecorder(HIGHEST_LATENCY_NS, LATENCY_DIGITS);
    private Histogram interval;
    private final Histogram total = newLatencyHistogram();
    /** Every latency recorded since the queue was built, by bucket; never reset (guarded by this). */
    private final LatencyBuckets.Accumulator buckets = new LatencyBuckets.Accumulator();

    /** Ring layout and resume point; set while stopped. */
    volatile QueueState layout;
    volatile Interrupt interrupt = Interrupt.NONE;
    /** Kick eventfd watched while the I/O thread sleeps; null for method-call kicks only. */
    volatile EventFd kick;
    /** I/O thread owned. */
    volatile QueueLifecycle state = QueueLifecycle.STOPPED;
    /** Requests popped and not yet returned to the pool: I/O thread owned. */
    int inflight;
    /**
     * Used elements added since the last publish: written by the completion side only. Volatile
     * because stop reads it on the I/O thread: in dedicated mode a request comes back to the pool
     * before its batch's used.idx is published, and stop must wait for that publish too.
     */
    volatile boolean dirty;
    /** When the throttle lets this queue pop again (System.nanoTime), 0 when not throttled. */
    long throttledUntilNs;
    /** Inflight tracking for crash recovery, or null. Set while stopped. */
    volatile InflightTracker inflightTracker;
    /**
     * Set by the completion side (only with an inflight tracker) from before it stores used.idx
     * until {@link InflightTracker#published} returned: while set, the I/O thread pops nothing of
     * this queue, so a head the guest re-posts on seeing the new used.idx is never popped (its
     * inflight flag set) before published() cleared the old batch's flags (see
     * RequestDispatcher.popQueue).
     */
    volatile boolean publishing;
    /** Heads to resubmit before popping the ring (recovered in-flight requests): I/O thread owned. */
    int[] resubmit = new int[0];
    int resubmitCount;
    /**
     * The dirty log the device's writes into this queue's buffers (read data, GET_ID, status
     * bytes) are marked in while a migration runs, or null. Read once per completed request.
     */
    volatile DirtyLog log;
    /**
     * Where this queue's used-ring writes are logged: {@link BlockDevice#USED_LOG_AT_RING} (the
     * ring's own address), {@link BlockDevice#USED_LOG_OFF}, or a guest address (vhost-user's
     * {@code log_guest_addr}).
     */
    volatile long usedLogAddress = BlockDevice.USED_LOG_AT_RING;
    /** Why the queue broke, for the owner. */
    volatile String brokenReason;
    /**
     * Set by whichever thread caught a fault in this queue's guest memory (see
     * {@link GuestFaults}); from then on completions skip guest memory, and the I/O thread
     * quarantines the queue at its next round. Cleared only by a reset.
     */
    volatile String faultReason;

    DeviceQueue(int index, int maxChainSegments) {
        this.index = index;
        this.ring = new SplitQueue(index, maxChainSegments);
    }

    /** Records one request latency; called only by the queue's completing thread. */
    void recordLatency(long latencyNs) {
        recorder.recordValue(Math.min(Math.max(latencyNs, 0), HIGHEST_LATENCY_NS));
    }

    /** Records {@code count} requests that each took {@code latencyNs} (one recorder call). */
    void recordLatency(long latencyNs, long count) {
        recorder.recordValueWithCount(Math.min(Math.max(latencyNs, 0), HIGHEST_LATENCY_NS), count);
    }

    /** A histogram as the queue's: its range and precision. */
    static Histogram newLatencyHistogram() {
        return new Histogram(HIGHEST_LATENCY_NS, LATENCY_DIGITS);
    }

    /**
     * Every latency recorded since the queue was built, counted into fixed buckets (not reset by
     * {@link #resetLatency()}, so a Prometheus histogram built from it only grows); safe while
     * running.
     */
    synchronized LatencyBuckets latencyBuckets() {
        collect();
        return buckets.snapshot();
    }

    /** All latencies recorded so far (a copy); safe while running. */
    synchronized Histogram latency() {
        collect();
        return total.copy();
    }

    /** What all latencies recorded so far say, read in place (no copy); safe while running. */
    synchronized LatencySummary latencySummary() {
        collect();
        return LatencySummary.of(total);
    }

    /** Folds what the recorder holds into the total; caller holds the lock. */
    private void collect() {
        interval = recorder.getIntervalHistogram(interval);
        total.add(interval);
        buckets.add(interval);
    }

    /** Forgets recorded latencies (not the buckets: they count since build). */
    synchronized void resetLatency() {
        interval = recorder.getIntervalHistogram(interval);
        buckets.add(interval);
        total.reset();
    }

    boolean running() {
        return state == QueueLifecycle.RUNNING;
    }
}
