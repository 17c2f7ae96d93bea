package io.vblk.engine;

import io.vblk.sys.SchedSlice;

/**
 * {@link SliceGovernor.SliceControl} on the calling thread through {@code sched_setattr}
 * ({@link SchedSlice.Changer}), keeping the slice the kernel reports after each change for
 * other threads to read ({@link #reportedNs()}: tests, stats). Changes are rare (a few a
 * second at most); nothing is allocated.
 */
final class KernelSlice implements SliceGovernor.SliceControl {
    private final SchedSlice.Changer changer = new SchedSlice.Changer();
    /** The custom slice the kernel reported after the last change, 0 for its default. */
    private volatile long reportedNs;

    @Override
    public long request(long sliceNs) {
        long rc = changer.request(sliceNs);
        if (rc == 0) {
            reportedNs = changer.current();
        }
        return rc;
    }

    @Override
    public long reset() {
        long rc = changer.reset();
        if (rc == 0) {
            reportedNs = 0; // sched_getattr reports the default slice then, not a custom one
        }
        return rc;
    }

    /** The custom slice the thread runs with now as the kernel reported it (0: the default). */
    long reportedNs() {
        return reportedNs;
    }
}
