package io.vblk.daemon;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Opens the exports of the configuration file at start, several at once. Each open attaches
 * its device to an I/O thread, a change that thread applies between two of its rounds: one
 * round trip per export (tens of milliseconds when its rounds are busy), so 200 exports opened
 * one after the other take seconds before the last is served. Opened {@link #PARALLEL} at a
 * time, the attaches that wait together are applied in one pass between two rounds
 * ({@code SharedIoThread} drains every queued change at once), and a network disk whose server
 * is slow to answer holds one worker, not every export after it.
 *
 * <p>A failure thrown by {@link Open#open} stops the start: no further entry is begun, the ones
 * under way end, and the failure of the lowest index is thrown (the one a start in file order
 * would have met first). The order in which the exports end up listed is the caller's to
 * restore ({@link Daemon#orderExportsAs}).
 *
 * <p>Progress is told outside the workers' shared lock: what the caller does with it (a systemd
 * notification, a datagram whose send blocks while systemd's socket is full) must not hold the
 * other workers, which take that lock after each open and before the next.
 */
final class StartOpener {
    /**
     * Entries opened at once: enough for the attaches to share the I/O threads' passes, few
     * enough that the files, io_uring instances and threads in setup at one moment stay small.
     */
    static final int PARALLEL = 16;

    /** Opens entry {@code index}: true when it failed and is kept as a failed entry; throws to stop the start. */
    @FunctionalInterface
    interface Open {
        boolean open(int index);
    }

    /**
     * Told how many entries have been tried and how many failed so far: serialized, in increasing
     * order, and no worker waits for it (one that finds it being told leaves its count to the
     * teller, which tells the entries tried meanwhile together next); the last call tells the final tally.
     */
    @FunctionalInterface
    interface Progress {
        void tried(int tried, int failed);
    }

    private StartOpener() {
    }

    /**
     * Opens entries {@code 0..count-1} with at most {@code parallel} at once, calling
     * {@code progress} after each; returns how many were kept as failed.
     */
    static int run(int count, int parallel, Open open, Progress progress) {
        if (count == 0) {
            return 0;
        }
        AtomicInteger next = new AtomicInteger();
        int[] tally = new int[2]; // tried, failed: guarded by itself
        Throwable[] stop = new Throwable[1];
        int[] stopIndex = {Integer.MAX_VALUE}; // both guarded by tally
        ReentrantLock telling = new ReentrantLock();
        AtomicInteger told = new AtomicInteger(); // the tried count told last: written holding telling
        // Tells the tally unless another worker is telling: that one tells it too before it lets
        // go (it looks again after unlocking, and a worker that found it telling counted first).
        Runnable report = () -> {
            while (telling.tryLock()) {
                try {
                    while (true) {
                        int tried;
                        int failed;
                        synchronized (tally) {
                            tried = tally[0];
                            failed = tally[1];
                        }
                        if (tried == told.get()) {
                            break;
                        }
                        told.set(tried);
                        progress.tried(tried, failed);
                    }
                } finally {
                    telling.unlock();
                }
                synchronized (tally) {
                    if (tally[0] == told.get()) {
                        return;
                    }
                }
            }
        };
        Runnable worker = () -> {
            for (int i = next.getAndIncrement(); i < count; i = next.getAndIncrement()) {
                synchronized (tally) {
                    if (stop[0] != null) {
                        return;
                    }
                }
                boolean failed;
                try {
                    failed = open.open(i);
                } catch (RuntimeException | Error e) {
                    synchronized (tally) {
                        if (i < stopIndex[0]) {
                            stopIndex[0] = i;
                            stop[0] = e;
                        }
                    }
                    return;
                }
                synchronized (tally) {
                    tally[0]++;
                    tally[1] += failed ? 1 : 0;
                }
                report.run();
            }
        };
        int n = Math.max(1, Math.min(parallel, count));
        Thread[] threads = new Thread[n - 1];
        for (int t = 0; t < threads.length; t++) {
            threads[t] = new Thread(worker, "vblk-start-" + (t + 1));
            threads[t].setDaemon(true);
            threads[t].start();
        }
        worker.run(); // the caller is one of the workers
        boolean interrupted = false;
        for (Thread t : threads) {
            while (true) {
                try {
                    t.join(); // an open ends on its own (a network disk's connect timeout bounds it)
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        synchronized (tally) {
            if (stop[0] instanceof RuntimeException r) {
                throw r;
            }
            if (stop[0] instanceof Error err) {
                throw err;
            }
            return tally[1];
        }
    }
}
