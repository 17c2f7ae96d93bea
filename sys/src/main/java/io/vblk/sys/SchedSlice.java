package io.vblk.sys;

/**
 * The calling thread's scheduler slice under EEVDF (Linux 6.12 and later): {@code
 * sched_setattr(2)} with {@code sched_runtime} set for a {@code SCHED_OTHER}/{@code SCHED_BATCH}
 * thread asks for a custom slice (the kernel clamps it to 0.1-100 ms). A thread with a shorter
 * slice than the thread running on its CPU gets an earlier virtual deadline when it wakes and
 * may preempt that thread at once instead of waiting for the end of its protected slice
 * ({@code PREEMPT_SHORT}, {@code RUN_TO_PARITY}). The policy and nice value are kept as they are.
 * Set-up path (two system calls).
 */
public final class SchedSlice {
    /** {@code struct sched_attr} up to util_max (SCHED_ATTR_SIZE_VER1). */
    static final int ATTR_SIZE = 56;
    private static final int SIZE_OFFSET = 0;
    private static final int POLICY_OFFSET = 4;
    private static final int FLAGS_OFFSET = 8;
    private static final int RUNTIME_OFFSET = 24;
    private static final int SCHED_OTHER = 0;
    private static final int SCHED_BATCH = 3;
    /** The kernel's bounds of a custom slice. */
    public static final long MIN_SLICE_NS = 100_000;
    public static final long MAX_SLICE_NS = 100_000_000;

    private SchedSlice() {
    }

    /**
     * The calling thread's slice in nanoseconds as the kernel reports it ({@code sched_getattr}:
     * the custom slice when one was set, else the default slice on kernels that report it, 0 on
     * those that do not), or {@code -errno} when the call failed.
     */
    public static long current() {
        return new Changer().current();
    }

    /**
     * Asks for a slice of {@code sliceNs} for the calling thread, keeping its policy and nice
     * value. Returns 0 when the kernel took it, else {@code -errno} (e.g. {@code -EINVAL} on a
     * kernel without custom slices, or when the thread runs a real-time policy, which has no slice).
     *
     * @throws IllegalArgumentException when {@code sliceNs} is outside {@link #MIN_SLICE_NS}..{@link #MAX_SLICE_NS}
     */
    public static long request(long sliceNs) {
        return new Changer().request(sliceNs);
    }

    /**
     * Gives the calling thread the kernel's default slice back ({@code sched_runtime} 0: no
     * custom slice), keeping its policy and nice value. Returns 0 or {@code -errno} as {@link #request}.
     */
    public static long reset() {
        return new Changer().reset();
    }

    /**
     * For a thread that changes its own slice now and then: owns its {@code struct sched_attr},
     * so a change allocates nothing (two system calls). Use it on one thread at a time.
     */
    public static final class Changer {
        private final NativeBuffer attr = new NativeBuffer(ATTR_SIZE);

        /** As {@link SchedSlice#current()}. */
        public long current() {
            try {
                long rc = Native.syscall(Linux.SYS_SCHED_GETATTR, 0, attr.address(), ATTR_SIZE, 0, 0);
                return rc < 0 ? rc : attr.buffer().getLong(RUNTIME_OFFSET);
            } finally {
                java.lang.ref.Reference.reachabilityFence(attr); // the memory lives until the call returned
            }
        }

        /** As {@link SchedSlice#request(long)}. */
        public long request(long sliceNs) {
            if (sliceNs < MIN_SLICE_NS || sliceNs > MAX_SLICE_NS) {
                throw new IllegalArgumentException("slice must be " + MIN_SLICE_NS + ".." + MAX_SLICE_NS + " ns: " + sliceNs);
            }
            return set(sliceNs);
        }

        /** As {@link SchedSlice#reset()}. */
        public long reset() {
            return set(0);
        }

        private long set(long runtimeNs) {
            try {
                return setAttr(runtimeNs);
            } finally {
                java.lang.ref.Reference.reachabilityFence(attr); // the memory lives until the calls returned
            }
        }

        private long setAttr(long runtimeNs) {
            long rc = Native.syscall(Linux.SYS_SCHED_GETATTR, 0, attr.address(), ATTR_SIZE, 0, 0);
            if (rc < 0) {
                return rc;
            }
            int policy = attr.buffer().getInt(POLICY_OFFSET);
            if (policy != SCHED_OTHER && policy != SCHED_BATCH) {
                return -Errno.EINVAL;
            }
            // Same policy, nice and utilisation clamps as read; only the slice changes (0: the
            // kernel's default again). Flags 0: the clamps are not touched (SCHED_FLAG_UTIL_CLAMP
            // unset), reset-on-fork cleared.
            attr.buffer().putInt(SIZE_OFFSET, ATTR_SIZE);
            attr.buffer().putLong(FLAGS_OFFSET, 0);
            attr.buffer().putLong(RUNTIME_OFFSET, runtimeNs);
            return Native.syscall(Linux.SYS_SCHED_SETATTR, 0, attr.address(), 0, 0, 0);
        }
    }
}
