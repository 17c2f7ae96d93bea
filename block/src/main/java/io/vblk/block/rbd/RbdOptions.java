package io.vblk.block.rbd;

/**
 * How an RBD disk is driven: request slots, and how long librados keeps retrying an operation
 * (an OSD or monitor that died and has not come back) before it fails with {@code -ETIMEDOUT}.
 * Immutable; {@code with*} copies.
 */
public final class RbdOptions {
    private final int depth;
    private final int maxSegments;
    private final int retryTimeoutSeconds;
    private final boolean readOnly;

    private RbdOptions(int depth, int maxSegments, int retryTimeoutSeconds, boolean readOnly) {
        if (depth < 1 || depth > 4096 || maxSegments < 1 || maxSegments > 1024 || retryTimeoutSeconds < 1) {
            throw new IllegalArgumentException("bad RBD options: depth " + depth + ", segments " + maxSegments
                    + ", retry " + retryTimeoutSeconds + " s");
        }
        this.depth = depth;
        this.maxSegments = maxSegments;
        this.retryTimeoutSeconds = retryTimeoutSeconds;
        this.readOnly = readOnly;
    }

    /** Depth 128, 256 segments per request (above QEMU's seg_max of 254), 30 s retry, writable (unless a snapshot). */
    public static RbdOptions defaults() {
        return new RbdOptions(128, 256, 30, false);
    }

    public RbdOptions withDepth(int value) {
        return new RbdOptions(value, maxSegments, retryTimeoutSeconds, readOnly);
    }

    public RbdOptions withMaxSegments(int value) {
        return new RbdOptions(depth, value, retryTimeoutSeconds, readOnly);
    }

    /** Seconds an operation may wait for the cluster (rados_osd_op_timeout, rados_mon_op_timeout). */
    public RbdOptions withRetryTimeoutSeconds(int value) {
        return new RbdOptions(depth, maxSegments, value, readOnly);
    }

    /** Opens the image read-only even when it is not a snapshot. */
    public RbdOptions withReadOnly(boolean value) {
        return new RbdOptions(depth, maxSegments, retryTimeoutSeconds, value);
    }

    public int depth() {
        return depth;
    }

    public int maxSegments() {
        return maxSegments;
    }

    public int retryTimeoutSeconds() {
        return retryTimeoutSeconds;
    }

    public boolean readOnly() {
        return readOnly;
    }
}
