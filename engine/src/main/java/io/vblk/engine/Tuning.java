package io.vblk.engine;

import java.util.Arrays;

import io.vblk.aio.FixedBufferMode;

/**
 * Data-plane tuning: wait strategy, threading mode, queue-to-thread mapping, back-end depth and
 * throttling. Immutable; {@link #defaults()} suits a 2-core machine.
 */
public final class Tuning {
    /** {@link #submitBatch()}'s default. */
    public static final int DEFAULT_SUBMIT_BATCH = 0;
    private final WaitStrategy waitStrategy;
    private final long pollNs;
    private final long pollMaxNs;
    private final long inFlightYieldNs;
    private final long sleepNs;
    private final ThreadingMode threadingMode;
    private final int[] queueThreads;
    private final int backendDepth;
    private final long iopsLimit;
    private final long bytesPerSecondLimit;
    private final long burstMs;
    private final boolean recordLatency;
    private final boolean adjustableLimits;
    private final int submitBatch;
    private final int subBatch;
    private final int submitChunk;
    private final int earlySignal;
    private final long answerWindowNs;
    private final boolean answerWindowAdaptive;
    private final FixedBufferMode fixedBuffers;
    private final boolean ringSleep;
    private final long schedSliceNs;

    private Tuning(Builder b) {
        waitStrategy = b.waitStrategy;
        pollNs = b.pollNs;
        pollMaxNs = b.pollMaxNs;
        inFlightYieldNs = b.inFlightYieldNs;
        sleepNs = b.sleepNs;
        threadingMode = b.threadingMode;
        queueThreads = b.queueThreads == null ? null : b.queueThreads.clone();
        backendDepth = b.backendDepth;
        iopsLimit = b.iopsLimit;
        bytesPerSecondLimit = b.bytesPerSecondLimit;
        burstMs = b.burstMs;
        recordLatency = b.recordLatency;
        adjustableLimits = b.adjustableLimits;
        submitBatch = b.submitBatch;
        subBatch = b.subBatch;
        submitChunk = b.submitChunk;
        earlySignal = b.earlySignal;
        answerWindowNs = b.answerWindowNs;
        answerWindowAdaptive = b.answerWindowAdaptive;
        fixedBuffers = b.fixedBuffers;
        ringSleep = b.ringSleep;
        schedSliceNs = b.schedSliceNs;
    }

    /**
     * The scheduler slice each of the device's own I/O threads runs with while it loses time
     * waiting for a CPU and does not poll (0: the kernel's default slice always). Under EEVDF
     * (Linux 6.12 and later) a {@code SCHED_OTHER} thread may ask for a slice of 0.1 to 100 ms
     * ({@code sched_setattr} with {@code sched_runtime}, see {@code io.vblk.sys.SchedSlice}); a
     * thread with a shorter slice than the one running on its CPU gets an earlier deadline when
     * it wakes, and preempts a thread that would otherwise keep the CPU for the rest of its own
     * slice (1.4 ms by default on 2 CPUs). That pays for a thread that sleeps and wakes for short
     * rounds on an oversubscribed host, and costs a thread that polls: it is cut off every slice
     * while another thread waits for its CPU. So the thread takes the slice only while its own
     * scheduler statistics say it pays, and gives it back when they say otherwise ({@link
     * SliceGovernor}: read at most every 10 ms, never per request). Kernels without custom
     * slices ignore it (the thread runs as before). Default: the system property {@code
     * vblk.schedSliceNs} ({@value #DEFAULT_SCHED_SLICE_NS} when unset).
     */
    public long schedSliceNs() {
        return schedSliceNs;
    }

    /**
     * {@link #schedSliceNs()}'s default when the {@code vblk.schedSliceNs} property is not set:
     * off. Measured 2026-12-06 07:21-07:50 UTC on Linux 6.18 (2 vCPUs, load 8-17 from other
     * work), {@code vblk bench --compare --only contention --contention-cell
     * qd1-block:2,qd1-block:1 --best-of 2 --runtime 3 --warmup 1}, 100 us against the build
     * without it in the same runs: with two busy loops 1.10, 1.36, 0.63, 1.00, 1.17, 1.12, 1.04x
     * IOPS (better in 6 of 7), with one 1.29, 1.10, 0.96, 0.71, 0.86, 0.87, 0.86x (worse in 5 of
     * 7: with a CPU to spare, a polling thread with a short slice is preempted every slice);
     * the goals against qemu-storage-daemon were met as often with it as without (two busy loops
     * 4 of 7 each) or less often (one busy loop 4 against 6 of 7). Taken only while contended
     * ({@link SliceGovernor}, 2026-12-06 11:04-11:37 UTC, load 5.6-26, same command with depth
     * 1 polling as well, 100 us against the build without it, fourteen pairs): with one busy
     * loop better in 2 of 14 (guest blocking) and 4 of 14 (polling), with two in 5 and 9 of 14
     * (README, Performance):
     * on a loaded host the thread waits for a CPU in every case and rarely polls, so the
     * governor cannot tell the cases apart. Off until a signal that does is found.
     */
    public static final long DEFAULT_SCHED_SLICE_NS = 0;

    /**
     * Whether the device registers its guest memory with each I/O thread's back end as fixed
     * buffers (io_uring READ_FIXED/WRITE_FIXED: no page pinning per I/O, at the price of pinning
     * the whole table); default {@link FixedBufferMode#AUTO}, see there for the trade-off.
     */
    public FixedBufferMode fixedBuffers() {
        return fixedBuffers;
    }

    /**
     * Whether an I/O thread whose back end is one io_uring ring sleeps in that ring
     * ({@code io_uring_enter} with GETEVENTS, polls on its eventfds) rather than in epoll plus the
     * ring's completion eventfd; it falls back to epoll by itself where that does not apply
     * (several rings, other back ends, a shared or dedicated-completion thread, a kernel before
     * 5.13). Default: the system property {@code vblk.ringSleep} ({@value #RING_SLEEP_DEFAULT}
     * when unset), so that a benchmark can compare both without new options.
     */
    public boolean ringSleep() {
        return ringSleep;
    }

    /**
     * {@link #ringSleep()}'s default when the {@code vblk.ringSleep} property is not set: off.
     * Measured 2026-12-05 (load 3-9, three alternating pairs of {@code vblk bench --compare
     * --only fio}): at depth 128 on the filled file no IOPS gain showed through the noise
     * (embedded / fio 0.71x, 0.90x, 0.93x sleeping in the ring against 0.90x, 0.83x, 1.05x in
     * epoll), nor in the device's CPU per I/O (3.29 against 3.31 us on average); depth 1 with a
     * blocking I/O thread was better in the ring (p50 69-74 against 80-119 us, CPU per I/O 40-45
     * against 47-75 us). Until it shows a gain, epoll stays the default.
     */
    public static final boolean RING_SLEEP_DEFAULT = false;

    /**
     * The most chains one I/O thread round pops (over all its queues, starting where the last
     * full round stopped) and hands to its back end in one submission; 0 (the default): every
     * available chain. A round that hits it is followed at once by another, which first reaps and
     * publishes what finished meanwhile, so a deep queue moves in batches of about this size (as
     * fio's {@code iodepth_batch_submit}). Measured on a filled file at depth 128 (2026-12-05):
     * budgets of 16, 32 and 64 gave no more IOPS than none and cost CPU per I/O, since the chains
     * left behind wait in the avail ring instead; hence off by default.
     */
    public int submitBatch() {
        return submitBatch;
    }

    /**
     * The most chains an I/O thread hands its back end in one submission within a round (0: all
     * the round pops, in one submission at its end). With a sub-batch the round submits every
     * this many chains as it pops, then reaps and publishes what finished meanwhile before it
     * pops on, so the device starts on the first requests while the rest are parsed, and the
     * guest sees completions (and posts new requests) within the round instead of lumps once a
     * round. {@link #submitBatch()} still caps the round as a whole (fairness between queues).
     * Default: the system property {@code vblk.subBatch} ({@value #DEFAULT_SUB_BATCH} when unset),
     * so that a benchmark can compare values without new options.
     */
    public int subBatch() {
        return subBatch;
    }

    /**
     * {@link #subBatch()}'s default when the {@code vblk.subBatch} property is not set: off.
     * Measured 2026-12-05 22:12-23:00 UTC on a machine at load 4-13 (other sessions' tests and
     * benchmarks): at depth 128 on the filled file, {@code BenchMain --iodepth 128}, eight
     * alternating rounds, 0 gave 108k/115k/77k/84k/98k/109k/116k/167k IOPS (median 109k) and 32
     * gave 101k/135k/95k/122k/81k/85k/136k/114k (median 108k; 32 with the reaping capped to 32 per
     * poll, and 16 so capped, no better); three alternating {@code vblk bench --compare --only
     * fio} runs gave embedded/fio 0.80x, 0.68x, 0.90x with 0 against 1.03x, 0.94x, 0.90x with 32,
     * serve/fio 0.73x, 0.77x, 0.65x against 0.90x, 0.71x, 0.82x: a hint, within the noise. The
     * sub-batches doubled the submissions per I/O (0.035 against 0.014), moved requests from the
     * device to the avail ring in the occupancy samples (device 69-93 against 83-103), and on the
     * null back end at depth 128 cost CPU per I/O (0.28 against 0.18-0.19 us). Until a quiet
     * machine shows a gain, one submission per round stays the default.
     */
    public static final int DEFAULT_SUB_BATCH = 0;

    /**
     * The most operations one submission (one {@code io_uring_enter}) hands the back end within a
     * round (0: everything the round popped, in one submission at its end). With a chunk the round
     * submits every this many operations as it pops, and only that: nothing is reaped or published
     * between chunks (unlike {@link #subBatch()}), so the guest still gets one lump and one
     * interrupt per round. What it buys: the disk starts on the first chunk while the rest of the
     * ring is parsed, and no single enter stays in the kernel for a whole ring's worth of
     * submissions (on a kernel without preemption, 100-200 us during which the block layer's own
     * dispatch worker waits for that CPU). fio's {@code iodepth_batch_submit} is the same knob.
     * Applies when {@link #subBatch()} and {@link #earlySignal()} are 0. Default: the system
     * property {@code vblk.submitChunk} ({@value #DEFAULT_SUBMIT_CHUNK} when unset).
     */
    public int submitChunk() {
        return submitChunk;
    }

    /**
     * {@link #submitChunk()}'s default when the {@code vblk.submitChunk} property is not set: off.
     * Measured 2026-12-06 13:40-14:05 UTC (load 15-22 from other work): at depth 128 on the filled
     * file a chunk of 32 moved a lump's first submission 5-24 us earlier (traced, p50), and six
     * alternating {@code vblk bench --compare --only fio --rounds 3 --runtime 4} pairs against the
     * build without it showed no direction (embedded/fio ahead in 2 of 6, serve/fio in 3 of 6).
     */
    public static final int DEFAULT_SUBMIT_CHUNK = 0;

    /**
     * After how many chains a round publishes what it completed so far and interrupts the guest,
     * once, when the guest waits for its very next completion (with EVENT_IDX used_event equals
     * used.idx; without, NO_INTERRUPT is clear), then pops on (0: never, one publish at the
     * round's end). A guest that sleeps until interrupted then wakes (10-20 us of the kernel's
     * wake-up on this machine) while the round finishes its other chains, instead of after it:
     * a blocking guest's cycle is the device's round, the wake-up and the guest's pass one after
     * the other, and this overlaps the first two. Unlike {@link #subBatch()} it publishes once
     * per round and only to a guest that asked to be woken: a guest already awake (used_event
     * behind) gets one lump at the round's end, as without it. Applies when {@link #subBatch()}
     * is 0. {@link #EARLY_SIGNAL_ADAPTIVE} (-1): the point adapts per queue, later when the
     * guest answered before the round ended, earlier when it had not. Default: the system property {@code vblk.earlySignal} ({@value #DEFAULT_EARLY_SIGNAL}
     * when unset).
     */
    public int earlySignal() {
        return earlySignal;
    }

    /** {@link #earlySignal()}: the point adapts to how fast the guest wakes (see {@code EarlySignal}). */
    public static final int EARLY_SIGNAL_ADAPTIVE = -1;

    /** {@link #earlySignal()}'s default when the {@code vblk.earlySignal} property is not set. */
    public static final int DEFAULT_EARLY_SIGNAL = 0;

    /**
     * How long an I/O thread whose back end holds a deep queue (at least
     * {@link AdaptivePollIdleStrategy#DEEP_IN_FLIGHT} operations) waits for the guest's answer
     * after a round that published completions, before it re-enables notifications and sleeps
     * in the kernel (0: never waits). A guest interrupted with a lump of completions re-posts
     * their slots within microseconds (a Linux virtio-blk guest re-issues as it reaps); if the
     * I/O thread has gone to sleep meanwhile, that lump costs a kick and a kernel wake-up of
     * the I/O thread, each exposed to the scheduler's delay, before it reaches the disk. Within
     * the window the thread yields the CPU between looks at the avail rings (a guest thread
     * woken on the same core runs) and returns to its rounds at the first new buffer or
     * completion. Only for a deep queue: there the completions already wake the thread, so a
     * kernel sleep costs nothing but the guest's answer; a shallow queue is left to the wait
     * strategy. Default: the system property {@code vblk.answerWindowNs}
     * ({@value #DEFAULT_ANSWER_WINDOW_NS} when unset).
     */
    public long answerWindowNs() {
        return answerWindowNs;
    }

    /**
     * {@link #answerWindowNs()}'s default when the {@code vblk.answerWindowNs} property is not
     * set: off. It was 50 us, adaptive ({@link #answerWindowAdaptive()}), from 05:15 to 06:41 on
     * 2026-12-06, and went off again when the contention row it should not touch showed it: {@code
     * vblk bench --compare --only contention --contention --contention-cell qd1-poll:2 --best-of 2}
     * with the window off as vblk and the default (50 us adaptive) as vblk-b, same jar, two runs:
     * 305,898 and 353,438 IOPS (p99 7.09 and 1.47 us) off against 163,406 and 179,522 (p99 7.87
     * and 5.74 us) on; the base build without it had made 1.4-2x the final one's IOPS in that cell
     * in three of four runs before. For the fio goals it measured within the noise, as below.
     * Measured 2026-12-06 04:49-05:16 UTC,
     * {@code vblk bench --compare --only fio --rounds 3 --runtime 4}, off and adaptive 50 us
     * alternating (order reversed each pair), eight pairs, load 2-10: embedded/fio 1.20, 1.02,
     * 0.91, 0.93, 1.05, 0.94, 0.93, 1.34x off against 1.08, 0.88, 1.08, 1.02, 1.03, 0.97, 1.06,
     * 0.91x adaptive (0.95x goal met 4 and 6 times of 8), serve/fio 1.05, 1.03, 0.81, 0.93, 0.99,
     * 1.00, 0.96, 1.25x against 0.94, 0.94, 1.06, 1.09, 0.93, 0.90, 1.03, 0.81x (0.9x goal met 7
     * times each), device CPU per I/O alike (2.4-2.9 us): no direction pair by pair, on because
     * it met the embedded goal more often. The fixed window (every publish waits), left off then:
     * measured 2026-12-06 01:09-01:40 UTC at depth 128 on the filled file, the machine
     * at load 4-12 from other sessions' work: it does what it is for (with 50 us, guest kicks per
     * I/O 0.009 to 0.006, sleeps that end in a kick 855 to 442 in 3 s, {@code
     * scripts/round-trace-report}), but the I/O thread yielding in the window competes with the
     * guest thread for the two CPUs (interrupt to the guest's re-post p50 16 to 48 us in the same
     * traced pair), and IOPS showed no direction through the noise: {@code BenchMain --iodepth 128
     * --runtime 2}, alternating, 50 us better in 5 of 5 rounds of one run (load 4-7) and worse in 7
     * of 8 of the next (load 5-8.5); {@code vblk bench --compare --only fio} twice each,
     * alternating (load 6-12): embedded/fio 0.80x and 1.14x off, 0.91x and 1.21x with 50 us;
     * serve/fio 0.71x and 0.70x off, 0.83x and 1.17x with. Three more such pairs on a quieter
     * machine (02:05-02:12, load 1.0-4.3): embedded/fio 0.81x, 0.83x, 0.90x off against 0.96x,
     * 0.86x, 0.97x with (better in each pair), but serve/fio 0.86x, 0.81x, 0.89x off against
     * 0.78x, 0.93x, 0.72x with (worse in two), and device CPU per I/O higher with it (embedded
     * 2.85-3.61 against 2.47-3.11 us, serve 3.72-3.95 against 2.33-3.33 us): it helped the
     * embedded guest and hurt {@code vblk serve} more often than not.
     */
    public static final long DEFAULT_ANSWER_WINDOW_NS = 0;

    /**
     * Whether the {@link #answerWindowNs() answer window} adapts to whether waiting pays (see
     * {@code AnswerWindow}): it stays open while its waits catch the guest's re-post, closes
     * after 4 waits in a row that ran out, and while closed waits once in 16 publishes (a probe
     * that catches the answer opens it); false waits after every publish. Default: the system
     * property {@code vblk.answerWindowAdaptive} (true when unset).
     */
    public boolean answerWindowAdaptive() {
        return answerWindowAdaptive;
    }

    /** Whether the device keeps a throttle even without limits, so {@code BlockDevice.setLimits} works. */
    public boolean adjustableLimits() {
        return adjustableLimits;
    }

    /** Adaptive waiting (50 us of polling), shared threading, one I/O thread for all queues. */
    public static Tuning defaults() {
        return builder().build();
    }

    public static Builder builder() {
        return new Builder();
    }

    public WaitStrategy waitStrategy() {
        return waitStrategy;
    }

    /**
     * With {@link WaitStrategy#ADAPTIVE} and a poll window: how long after the last work an I/O
     * thread whose back end holds operations yields between rounds instead of sleeping (0, the
     * default: never; see {@link InFlightYieldIdleStrategy}).
     */
    public long inFlightYieldNs() {
        return inFlightYieldNs;
    }

    /**
     * How long {@link WaitStrategy#ADAPTIVE} first polls after the last work before it blocks;
     * the window then adapts between 0 and {@link #pollMaxNs()}.
     */
    public long pollNs() {
        return pollNs;
    }

    /**
     * The longest poll window {@link WaitStrategy#ADAPTIVE} grows to (0: never poll, block at
     * once). The window grows while wake-ups come soon after it ends and shrinks when they come
     * later than this, or when the thread loses its core while polling.
     */
    public long pollMaxNs() {
        return pollMaxNs;
    }

    /** How long {@link WaitStrategy#SLEEPING} parks per idle round. */
    public long sleepNs() {
        return sleepNs;
    }

    public ThreadingMode threadingMode() {
        return threadingMode;
    }

    /**
     * The I/O thread of queue {@code queue} (like QEMU's iothread-vq-mapping): from the explicit
     * mapping when one was given, else thread 0.
     */
    public int threadOf(int queue) {
        return queueThreads == null || queue >= queueThreads.length ? 0 : queueThreads[queue];
    }

    /** Number of I/O threads the mapping uses for {@code numQueues} queues. */
    public int threadCount(int numQueues) {
        int max = 0;
        for (int q = 0; q < numQueues; q++) {
            max = Math.max(max, threadOf(q));
        }
        return max + 1;
    }

    /** In-flight operations per I/O thread's back end; 0 means the sum of its queues' sizes. */
    public int backendDepth() {
        return backendDepth;
    }

    public long iopsLimit() {
        return iopsLimit;
    }

    public long bytesPerSecondLimit() {
        return bytesPerSecondLimit;
    }

    public long burstMs() {
        return burstMs;
    }

    /** Whether per-request latency goes into the queues' histograms (two clock reads a request). */
    public boolean recordLatency() {
        return recordLatency;
    }

    @Override
    public String toString() {
        return "Tuning[" + waitStrategy.cliName() + (waitStrategy == WaitStrategy.ADAPTIVE
                ? " " + Math.min(pollNs, pollMaxNs) / 1000 + "-" + pollMaxNs / 1000 + "us" : "")
                + ", " + threadingMode.name().toLowerCase(java.util.Locale.ROOT)
                + (queueThreads == null ? "" : ", threads " + Arrays.toString(queueThreads))
                + (iopsLimit > 0 ? ", iops<=" + iopsLimit : "") + (bytesPerSecondLimit > 0 ? ", bps<=" + bytesPerSecondLimit : "")
                + (fixedBuffers != FixedBufferMode.AUTO ? ", fixed buffers " + fixedBuffers : "")
                + (answerWindowNs > 0 ? ", answer window " + answerWindowNs / 1000 + "us" + (answerWindowAdaptive ? " adaptive" : "") : "")
                + (earlySignal > 0 ? ", early signal " + earlySignal
                        : earlySignal == EARLY_SIGNAL_ADAPTIVE ? ", early signal adaptive" : "")
                + (schedSliceNs > 0 ? ", slice " + schedSliceNs / 1000 + "us" : "") + "]";
    }

    /** {@code value} when it is 0 or a slice the kernel takes (0.1-100 ms). */
    static long checkedSchedSlice(long value) {
        if (value != 0 && (value < io.vblk.sys.SchedSlice.MIN_SLICE_NS || value > io.vblk.sys.SchedSlice.MAX_SLICE_NS)) {
            throw new IllegalArgumentException("scheduler slice must be 0 or " + io.vblk.sys.SchedSlice.MIN_SLICE_NS
                    + ".." + io.vblk.sys.SchedSlice.MAX_SLICE_NS + " ns: " + value);
        }
        return value;
    }

    /** Builder for {@link Tuning}. */
    public static final class Builder {
        private WaitStrategy waitStrategy = WaitStrategy.ADAPTIVE;
        private long pollNs = 50_000;
        private long pollMaxNs = AdaptivePollIdleStrategy.DEFAULT_POLL_MAX_NS;
        private long inFlightYieldNs;
        private long sleepNs = 50_000;
        private ThreadingMode threadingMode = ThreadingMode.SHARED;
        private int[] queueThreads;
        private int backendDepth;
        private long iopsLimit;
        private long bytesPerSecondLimit;
        private boolean adjustableLimits;
        private long burstMs = 100;
        private boolean recordLatency = true;
        private int submitBatch = DEFAULT_SUBMIT_BATCH;
        private int subBatch = checkedSubBatch(Integer.getInteger("vblk.subBatch", DEFAULT_SUB_BATCH));
        private int submitChunk = checkedSubmitChunk(Integer.getInteger("vblk.submitChunk", DEFAULT_SUBMIT_CHUNK));
        private int earlySignal = checkedEarlySignal(Integer.getInteger("vblk.earlySignal", DEFAULT_EARLY_SIGNAL));
        private FixedBufferMode fixedBuffers = FixedBufferMode.AUTO;
        private long answerWindowNs = checkedAnswerWindow(Long.getLong("vblk.answerWindowNs", DEFAULT_ANSWER_WINDOW_NS));
        private long schedSliceNs = checkedSchedSlice(Long.getLong("vblk.schedSliceNs", DEFAULT_SCHED_SLICE_NS));

        /** See {@link Tuning#schedSliceNs()}: 0 (the kernel's default) or 100,000..100,000,000 ns. */
        public Builder schedSliceNs(long value) {
            schedSliceNs = checkedSchedSlice(value);
            return this;
        }

        private static long checkedSchedSlice(long value) {
            return Tuning.checkedSchedSlice(value);
        }

        /** See {@link Tuning#answerWindowNs()}: 0 (never wait for the guest's answer) up to one second. */
        public Builder answerWindowNs(long value) {
            answerWindowNs = checkedAnswerWindow(value);
            return this;
        }

        private boolean answerWindowAdaptive = Boolean.parseBoolean(System.getProperty("vblk.answerWindowAdaptive", "true"));

        /** See {@link Tuning#answerWindowAdaptive()}. */
        public Builder answerWindowAdaptive(boolean value) {
            answerWindowAdaptive = value;
            return this;
        }

        private static long checkedAnswerWindow(long value) {
            if (value < 0 || value > 1_000_000_000L) {
                throw new IllegalArgumentException("answer window must be 0..1000000000 ns: " + value);
            }
            return value;
        }

        /** See {@link Tuning#fixedBuffers()} (default {@link FixedBufferMode#AUTO}). */
        public Builder fixedBuffers(FixedBufferMode value) {
            fixedBuffers = java.util.Objects.requireNonNull(value, "fixedBuffers");
            return this;
        }

        private boolean ringSleep = Boolean.parseBoolean(System.getProperty("vblk.ringSleep", Boolean.toString(RING_SLEEP_DEFAULT)));

        /** See {@link Tuning#ringSleep()}: false forces epoll (for comparison, or as a fallback). */
        public Builder ringSleep(boolean value) {
            ringSleep = value;
            return this;
        }

        public Builder waitStrategy(WaitStrategy value) {
            waitStrategy = value;
            return this;
        }

        public Builder pollNs(long value) {
            if (value < 0) {
                throw new IllegalArgumentException("poll time must not be negative: " + value);
            }
            pollNs = value;
            return this;
        }

        /** The adaptive poll window's upper bound (default 100 us); 0 never polls. */
        public Builder pollMaxNs(long value) {
            if (value < 0) {
                throw new IllegalArgumentException("poll maximum must not be negative: " + value);
            }
            pollMaxNs = value;
            return this;
        }

        /**
         * Adaptive waiting: yield between rounds for up to {@code value} ns after the last work
         * while the back end holds operations, instead of sleeping in the kernel (default 0: off).
         * Keeps a deep queue on a fast disk fuller at the price of CPU per I/O; see
         * {@link InFlightYieldIdleStrategy} for what it was measured to give and cost.
         */
        public Builder inFlightYieldNs(long value) {
            if (value < 0) {
                throw new IllegalArgumentException("in-flight yield must not be negative: " + value);
            }
            inFlightYieldNs = value;
            return this;
        }

        public Builder sleepNs(long value) {
            if (value <= 0) {
                throw new IllegalArgumentException("sleep time must be positive: " + value);
            }
            sleepNs = value;
            return this;
        }

        public Builder threadingMode(ThreadingMode value) {
            threadingMode = value;
            return this;
        }

        /** Maps queue {@code i} to I/O thread {@code threads[i]} (0-based, no gaps needed). */
        public Builder queueThreads(int... threads) {
            for (int t : threads) {
                if (t < 0 || t >= 64) {
                    throw new IllegalArgumentException("thread index must be 0..63: " + Arrays.toString(threads));
                }
            }
            queueThreads = threads.clone();
            return this;
        }

        /** Maps queues round-robin onto {@code count} threads. */
        public Builder threads(int count, int numQueues) {
            if (count < 1) {
                throw new IllegalArgumentException("thread count must be positive: " + count);
            }
            int[] map = new int[numQueues];
            for (int q = 0; q < numQueues; q++) {
                map[q] = q % count;
            }
            return queueThreads(map);
        }

        public Builder backendDepth(int value) {
            if (value < 0 || value > 65536) {
                throw new IllegalArgumentException("back-end depth must be 0..65536: " + value);
            }
            backendDepth = value;
            return this;
        }

        /** Limits the device to {@code iops} requests per second (0: unlimited). */
        public Builder iopsLimit(long iops) {
            if (iops < 0) {
                throw new IllegalArgumentException("IOPS limit must not be negative: " + iops);
            }
            iopsLimit = iops;
            return this;
        }

        /** Limits the device to {@code bytesPerSecond} (0: unlimited). */
        public Builder bytesPerSecondLimit(long bytesPerSecond) {
            if (bytesPerSecond < 0) {
                throw new IllegalArgumentException("bandwidth limit must not be negative: " + bytesPerSecond);
            }
            bytesPerSecondLimit = bytesPerSecond;
            return this;
        }

        /** How far ahead of the limits a burst may run, in milliseconds of the rate (default 100). */
        public Builder burstMs(long value) {
            if (value < 0) {
                throw new IllegalArgumentException("burst must not be negative: " + value);
            }
            burstMs = value;
            return this;
        }

        public Builder recordLatency(boolean value) {
            recordLatency = value;
            return this;
        }

        /**
         * Keep a throttle even while no limit is set, so that limits can be set and changed at
         * run time ({@code BlockDevice.setLimits}); costs a clock read per round (default off).
         */
        public Builder adjustableLimits(boolean value) {
            adjustableLimits = value;
            return this;
        }

        /** See {@link Tuning#submitBatch()}: 0 (every available chain) or 1..65536. */
        public Builder submitBatch(int value) {
            if (value < 0 || value > 65536) {
                throw new IllegalArgumentException("submit batch must be 0..65536: " + value);
            }
            submitBatch = value;
            return this;
        }

        /** See {@link Tuning#subBatch()}: 0 (one submission per round) or 1..65536. */
        public Builder subBatch(int value) {
            subBatch = checkedSubBatch(value);
            return this;
        }

        /** See {@link Tuning#submitChunk()}: 0 (one submission per round) or 1..65536 operations. */
        public Builder submitChunk(int value) {
            submitChunk = checkedSubmitChunk(value);
            return this;
        }

        private static int checkedSubmitChunk(int value) {
            if (value < 0 || value > 65536) {
                throw new IllegalArgumentException("submit chunk must be 0..65536 operations: " + value);
            }
            return value;
        }

        /** See {@link Tuning#earlySignal()}: 0 (one publish at the round's end), 1..65536 chains, or -1 (adaptive). */
        public Builder earlySignal(int value) {
            earlySignal = checkedEarlySignal(value);
            return this;
        }

        private static int checkedEarlySignal(int value) {
            if (value < EARLY_SIGNAL_ADAPTIVE || value > 65536) {
                throw new IllegalArgumentException("early signal must be -1 (adaptive) or 0..65536 chains: " + value);
            }
            return value;
        }

        private static int checkedSubBatch(int value) {
            if (value < 0 || value > 65536) {
                throw new IllegalArgumentException("sub-batch must be 0..65536: " + value);
            }
            return value;
        }

        public Tuning build() {
            return new Tuning(this);
        }
    }
}
