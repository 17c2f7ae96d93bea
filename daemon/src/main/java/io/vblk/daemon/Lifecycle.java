package io.vblk.daemon;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import io.vblk.vhost.Log;

/**
 * How {@code serve} and {@code daemon} run until asked to stop, and stop: SIGINT, SIGTERM or
 * {@code daemon.shutdown} drain every export, close the control socket and the metrics endpoint,
 * and end with status 0, as qemu-storage-daemon does after a requested shutdown that drained.
 */
final class Lifecycle {
    private static final long SHUTDOWN_WAIT_SECONDS = 30;
    /** How often the exports' socket files are looked at while the daemon runs. */
    static final long SOCKET_CHECK_SECONDS = 10;

    private Lifecycle() {
    }

    /**
     * Waits for a shutdown request, then closes {@code daemon} and then {@code others} (in order).
     * With {@code signals} a shutdown hook turns SIGINT and SIGTERM into that request and waits
     * for the drain before the JVM ends.
     */
    static int runUntilShutdown(Daemon daemon, Log log, boolean signals, AutoCloseable... others) {
        CountDownLatch cleanedUp = new CountDownLatch(1);
        Thread hook = null;
        if (signals) {
            hook = new Thread(() -> {
                daemon.requestShutdown(); // the waiting thread below says so and closes
                boolean clean = await(cleanedUp);
                System.out.flush();
                System.err.flush();
                Runtime.getRuntime().halt(clean ? 0 : 1);
            }, "vblk-shutdown");
            Runtime.getRuntime().addShutdownHook(hook);
        }
        if (daemon.readyNotice() != null) {
            daemon.systemd().send(daemon.readyNotice());
        }
        try {
            // This thread only waits: it also looks at every export's socket file now and then
            // (a stat each), so one removed under a live export is told (Daemon#checkSockets).
            while (!daemon.awaitShutdownRequest(SOCKET_CHECK_SECONDS, TimeUnit.SECONDS)) {
                try {
                    daemon.checkSockets();
                } catch (RuntimeException e) {
                    log.info("checking the export sockets failed: " + e);
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        // Before the first export stops: its "stopped" line follows this one, whichever asked
        // (a signal or daemon.shutdown).
        int exports = daemon.exports().size();
        daemon.systemd().send("STOPPING=1\nSTATUS=shutting down: draining " + exports + (exports == 1 ? " export" : " exports"));
        log.info("shutting down: draining and closing " + exports + (exports == 1 ? " export" : " exports"));
        List<AutoCloseable> order = new ArrayList<>();
        order.add(daemon);
        order.addAll(Arrays.asList(others));
        try {
            for (AutoCloseable c : order) {
                if (c == null) {
                    continue;
                }
                try {
                    c.close();
                } catch (Exception e) {
                    log.info("closing " + c.getClass().getSimpleName() + " failed: " + e);
                }
            }
        } finally {
            cleanedUp.countDown();
        }
        return 0;
    }

    private static boolean await(CountDownLatch latch) {
        try {
            return latch.await(SHUTDOWN_WAIT_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            return false;
        }
    }
}
