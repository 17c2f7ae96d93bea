package io.vblk.perf.load;

import io.vblk.perf.report.BenchResult;

/**
 * Something that serves a workload and is measured: vblk embedded, the data-plane-off baseline,
 * a vhost-user-blk backend behind a socket, fio. One contender runs at a time.
 */
public interface Contender {
    /** A short label for progress lines ("vblk serve", "qemu-storage-daemon", "fio"). */
    String label();

    /**
     * Runs {@code workload} once and returns what was measured, under {@code name}; tells
     * {@code observer} when the clock starts.
     *
     * @throws Exception when the run cannot be set up or the serving side fails
     */
    BenchResult run(String name, Workload workload, RunObserver observer) throws Exception;
}
