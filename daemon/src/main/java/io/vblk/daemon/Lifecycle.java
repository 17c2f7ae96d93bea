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
     * How the process answers signals, installed before anything listens: SIGINT and SIGTERM
     * become a shutdown request (a shutdown hook that waits for the drain, then ends the JVM with
     * status 0, or 1 when the drain did not end in time), so one that comes while the exports of
     * the configuration still open stops the start and drains what is open; SIGHUP is logged and
     * ignored (the JVM's default runs the hooks: every export stopped with status 0, which a
     * unit's Restart=on-failure does not restart).
     */
    static final class Signals {
        private final CountDownLatch cleanedUp = new CountDownLatch(1);
        private Thread hook;

        private Signals() {
        }

        /** With {@code signals} false (tests running in the caller's JVM), nothing is installed. */
        static Signals install(Daemon daemon, Log log, boolean signals) {
            Signals s = new Signals();
            if (!signals) {
                return s;
            }
            try {
                onHangup(() -> log.info("SIGHUP ignored: vblk reloads nothing (exports change at run time through the"
                        + " control socket); SIGTERM or SIGINT stops it"));
            } catch (ReflectiveOperationException | RuntimeException e) {
                // -Xrs, or the signal is taken: the JVM's own handling stays
                log.info("cannot handle SIGHUP (" + e + "): it stops vblk as SIGTERM does");
            }
            s.hook = new Thread(() -> {
                if (!daemon.isReady()) {
                    log.info("shutdown requested during the start: no further export of the configuration opens; the"
                            + " ones open drain");
                }
                daemon.requestShutdown(); // the thread that runs the daemon says so and closes
                boolean clean = await(s.cleanedUp);
                System.out.flush();
                System.err.flush();
                Runtime.getRuntime().halt(clean ? 0 : 1);
            }, "vblk-shutdown");
            Runtime.getRuntime().addShutdownHook(s.hook);
            return s;
        }

        /**
         * The start failed and the daemon is closed: the hook is removed (the failure's status is
         * the exit status), or, when a signal's hook runs already, let end the JVM.
         */
        void startFailed() {
            if (hook == null) {
                return;
            }
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException e) {
                cleanedUp.countDown(); // the JVM is shutting down: the hook halts it
            }
        }
    }

    /**
     * Runs {@code action} on SIGHUP instead of the JVM's default (its shutdown). sun.misc.Signal
     * (module jdk.unsupported, the supported way for an application) is reached reflectively:
     * javac's warning for it cannot be suppressed, and the build treats warnings as errors.
     */
    private static void onHangup(Runnable action) throws ReflectiveOperationException {
        Class<?> signal = Class.forName("sun.misc.Signal");
        Class<?> handler = Class.forName("sun.misc.SignalHandler");
        Object h = java.lang.reflect.Proxy.newProxyInstance(Lifecycle.class.getClassLoader(), new Class<?>[] {handler},
                (proxy, method, args) -> switch (method.getName()) {
                    case "handle" -> {
                        action.run();
                        yield null;
                    }
                    case "hashCode" -> System.identityHashCode(proxy);
                    case "equals" -> proxy == args[0];
                    default -> "vblk SIGHUP handler";
                });
        signal.getMethod("handle", signal, handler).invoke(null, signal.getConstructor(String.class).newInstance("HUP"), h);
    }

    /**
     * Waits for a shutdown request, then closes {@code daemon} and then {@code others} (in order).
     * With {@code signals} a shutdown hook turns SIGINT and SIGTERM into that request and waits
     * for the drain before the JVM ends.
     */
    static int runUntilShutdown(Daemon daemon, Log log, boolean signals, AutoCloseable... others) {
        return runUntilShutdown(daemon, log, Signals.install(daemon, log, signals), others);
    }

    /** As above, with the signal handling the caller installed before its start. */
    static int runUntilShutdown(Daemon daemon, Log log, Signals signals, AutoCloseable... others) {
        CountDownLatch cleanedUp = signals.cleanedUp;
        if (daemon.readyNotice() != null && !daemon.shuttingDown()) { // not after a signal during the start
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
