package io.vblk.aio;

/**
 * Sizing of a back end: an immutable value with withers.
 *
 * <ul>
 *   <li>{@code depth}: slots, the most operations in flight (default 128).</li>
 *   <li>{@code maxSegments}: guest segments one operation may have (default 256, at most 1024,
 *       the kernel's UIO_MAXIOV); iovec space is preallocated for every slot.</li>
 *   <li>{@code maxBounceBytes}: the largest operation that may be bounced when its buffers miss
 *       O_DIRECT's alignment (default 4 MiB); larger ones are refused with {@code -EINVAL}.</li>
 *   <li>{@code workerThreads}: threads of the thread back end (default min(depth, 8)).</li>
 *   <li>{@code singleIssuer}: io_uring only: set the ring up as fio does, SINGLE_ISSUER with
 *       DEFER_TASKRUN, owned by the first thread that enters it (default off; the engine asks
 *       for it where its I/O thread reaps, when the system property {@code vblk.uring.singleIssuer}
 *       is true: {@link #SINGLE_ISSUER_DEFAULT}). Only for a back end whose one thread both
 *       submits and reaps: completions are then posted only when that thread enters the ring.
 *       A kernel that refuses the flags gets the usual ring.</li>
 * </ul>
 */
public final class BackendOptions {
    /** Default segments per operation: above QEMU's default seg_max of 254. */
    public static final int DEFAULT_MAX_SEGMENTS = 256;
    /** Default largest bounced operation. */
    public static final long DEFAULT_MAX_BOUNCE_BYTES = 4L << 20;
    /** Default depth. */
    public static final int DEFAULT_DEPTH = 128;
    /** Default cap on worker threads of the thread back end. */
    public static final int DEFAULT_MAX_WORKERS = 8;

    private final int depth;
    private final int maxSegments;
    private final long maxBounceBytes;
    private final int workerThreads;
    private final boolean singleIssuer;

    /**
     * Whether the engine asks for single-issuer rings where its I/O thread reaps: the system
     * property {@code vblk.uring.singleIssuer} (default false).
     */
    public static final boolean SINGLE_ISSUER_DEFAULT = Boolean.getBoolean("vblk.uring.singleIssuer");

    private BackendOptions(int depth, int maxSegments, long maxBounceBytes, int workerThreads) {
        this(depth, maxSegments, maxBounceBytes, workerThreads, false);
    }

    private BackendOptions(int depth, int maxSegments, long maxBounceBytes, int workerThreads, boolean singleIssuer) {
        if (depth <= 0 || maxSegments <= 0 || maxSegments > IovecDescriptor.MAX_IOVECS || maxBounceBytes < 0
                || workerThreads < 0) {
            throw new IllegalArgumentException("bad back-end options: depth " + depth + ", maxSegments " + maxSegments
                    + " (1.." + IovecDescriptor.MAX_IOVECS + "), maxBounceBytes " + maxBounceBytes
                    + ", workerThreads " + workerThreads);
        }
        this.depth = depth;
        this.maxSegments = maxSegments;
        this.maxBounceBytes = maxBounceBytes;
        this.workerThreads = workerThreads;
        this.singleIssuer = singleIssuer;
    }

    /** Defaults with the given depth. */
    public static BackendOptions depth(int depth) {
        return new BackendOptions(depth, DEFAULT_MAX_SEGMENTS, DEFAULT_MAX_BOUNCE_BYTES, 0);
    }

    /** Returns a copy with {@code value} segments per operation. */
    public BackendOptions maxSegments(int value) {
        return new BackendOptions(depth, value, maxBounceBytes, workerThreads, singleIssuer);
    }

    /** Returns a copy whose largest bounced operation is {@code value} bytes. */
    public BackendOptions maxBounceBytes(long value) {
        return new BackendOptions(depth, maxSegments, value, workerThreads, singleIssuer);
    }

    /** Returns a copy with {@code value} worker threads (thread back end; 0: the default). */
    public BackendOptions workerThreads(int value) {
        return new BackendOptions(depth, maxSegments, maxBounceBytes, value, singleIssuer);
    }

    /** Returns a copy whose io_uring ring is single-issuer with deferred task running, or not. */
    public BackendOptions singleIssuer(boolean value) {
        return new BackendOptions(depth, maxSegments, maxBounceBytes, workerThreads, value);
    }

    /** Whether an io_uring ring is set up single-issuer with deferred task running. */
    public boolean singleIssuer() {
        return singleIssuer;
    }

    /** Slots. */
    public int depth() {
        return depth;
    }

    /** Segments per operation. */
    public int maxSegments() {
        return maxSegments;
    }

    /** Largest bounced operation in bytes. */
    public long maxBounceBytes() {
        return maxBounceBytes;
    }

    /** Worker threads of the thread back end, the default applied. */
    public int workerThreads() {
        return workerThreads > 0 ? workerThreads : Math.min(depth, DEFAULT_MAX_WORKERS);
    }

    @Override
    public String toString() {
        return "BackendOptions[depth " + depth + ", maxSegments " + maxSegments + ", maxBounceBytes " + maxBounceBytes
                + ", workers " + workerThreads() + (singleIssuer ? ", single issuer" : "") + "]";
    }
}
