package io.vblk.perf.load;

import java.util.function.LongSupplier;

/** Watches a run from another thread (the progress line). */
public interface RunObserver {
    /** Watches nothing. */
    RunObserver NONE = new RunObserver() {
        @Override
        public void started(String name, LongSupplier completed, long warmupNs, long runtimeNs) {
        }

        @Override
        public void finished() {
        }
    };

    /**
     * A run began: {@code completed} counts requests so far (warm-up included), or returns -1
     * when the contender cannot tell (fio).
     */
    void started(String name, LongSupplier completed, long warmupNs, long runtimeNs);

    /** The run ended (successfully or not). */
    void finished();
}
