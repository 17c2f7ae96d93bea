package io.vblk.perf;

import java.io.PrintStream;
import java.util.Locale;
import java.util.function.LongSupplier;

import io.vblk.perf.load.RunObserver;

/**
 * The progress line on stderr: once a second during a run longer than 3 s, the run's name, the
 * elapsed time and the last second's IOPS. On a terminal it rewrites one line; otherwise it
 * prints a line each second. Runs on its own daemon thread and reads a counter the guest
 * publishes with a release store, so the guest pays nothing for it.
 */
final class Progress implements RunObserver {
    private static final long MIN_RUN_NS = 3_000_000_000L;

    private final PrintStream err;
    private final boolean enabled;
    private final boolean terminal = System.console() != null;
    private Thread thread;
    private volatile boolean running;

    Progress(PrintStream err, boolean enabled) {
        this.err = err;
        this.enabled = enabled;
    }

    @Override
    public void started(String name, LongSupplier completed, long warmupNs, long runtimeNs) {
        if (!enabled || warmupNs + runtimeNs <= MIN_RUN_NS) {
            return;
        }
        running = true;
        long start = System.nanoTime();
        thread = new Thread(() -> report(name, completed, start, warmupNs, runtimeNs), "vblk-bench-progress");
        thread.setDaemon(true);
        thread.start();
    }

    private void report(String name, LongSupplier completed, long start, long warmupNs, long runtimeNs) {
        long last = Math.max(0, completed.getAsLong());
        long lastAt = System.nanoTime();
        while (running) {
            try {
                Thread.sleep(1000);
            } catch (InterruptedException e) {
                return;
            }
            if (!running) {
                return;
            }
            long now = System.nanoTime();
            long done = completed.getAsLong();
            double elapsed = (now - start) / 1e9;
            String phase = now - start < warmupNs ? "warm-up" : String.format(Locale.ROOT, "%4.0f/%.0f s",
                    (now - start - warmupNs) / 1e9, runtimeNs / 1e9);
            String rate = done < 0 ? "" : String.format(Locale.ROOT, "%,12.0f IOPS", (done - last) / ((now - lastAt) / 1e9));
            String line = String.format(Locale.ROOT, "  %-44s %-10s %s  (%.0f s)", name, phase, rate, elapsed);
            synchronized (err) {
                if (terminal) {
                    err.print("\r" + line + "   ");
                } else {
                    err.println(line);
                }
                err.flush();
            }
            last = done;
            lastAt = now;
        }
    }

    @Override
    public void finished() {
        running = false;
        Thread t = thread;
        thread = null;
        if (t != null) {
            t.interrupt();
            try {
                t.join(2000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            if (terminal) {
                synchronized (err) {
                    err.print("\r" + " ".repeat(100) + "\r");
                    err.flush();
                }
            }
        }
    }
}
