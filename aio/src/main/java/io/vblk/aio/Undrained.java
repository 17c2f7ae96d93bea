package io.vblk.aio;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Back ends whose {@link IoBackend#close()} gave up waiting for the kernel (a hung FUSE or NFS
 * file, a frozen disk): kept reachable here, so that nothing the kernel may still write (slots,
 * bounce buffers, rings, iocbs) is freed by the collector, and counted for metrics. Each is
 * handed to a reaper thread of its own that waits for the kernel without limit, off every
 * control path, and frees what the back end held once nothing is in flight; a back end the
 * reaper cannot wait for (a single-issuer ring closed by another thread than its owner) or
 * whose helper thread is stuck in a system call stays here for the JVM's life (leaked, never
 * freed under the kernel).
 */
final class Undrained {
    private static final Set<SlottedBackend> KEPT = ConcurrentHashMap.newKeySet();
    private static final System.Logger LOG = System.getLogger(IoBackend.class.getName());
    private static final java.util.concurrent.atomic.AtomicInteger REAPERS = new java.util.concurrent.atomic.AtomicInteger();

    /**
     * How long {@link IoBackend#close()} waits for operations still with the kernel
     * ({@code vblk.aio.closeDrainMs}, default 10 s; read at each close).
     */
    static long closeDrainNs() {
        return TimeUnit.MILLISECONDS.toNanos(Math.max(0, Long.getLong("vblk.aio.closeDrainMs", 10_000)));
    }

    private Undrained() {
    }

    /**
     * {@code backend}'s close left {@code inFlight} operations with the kernel after {@code
     * waitedNs}: keeps it, says so once, and starts its reaper ({@code reap}, which waits for what
     * is in flight, frees, and returns whether it could) unless {@code reap} is null.
     */
    static void kept(SlottedBackend backend, int inFlight, long waitedNs, java.util.function.BooleanSupplier reap) {
        KEPT.add(backend);
        LOG.log(System.Logger.Level.WARNING, backend.getClass().getSimpleName() + " on " + backend.image + ": closed with "
                + inFlight + " operation(s) still with the kernel after " + TimeUnit.NANOSECONDS.toMillis(waitedNs)
                + " ms: its slots, buffers and rings are kept until the kernel finishes them"
                + (reap == null ? " (never: they stay for the JVM's life)" : " (a reaper thread waits)"));
        if (reap == null) {
            return;
        }
        Thread t = new Thread(() -> {
            if (reap.getAsBoolean()) {
                KEPT.remove(backend);
                LOG.log(System.Logger.Level.INFO, backend.getClass().getSimpleName() + " on " + backend.image
                        + ": the kernel finished what an undrained close left; released");
            } else {
                LOG.log(System.Logger.Level.WARNING, backend.getClass().getSimpleName() + " on " + backend.image
                        + ": the kernel's operations cannot be awaited from here: kept for the JVM's life");
            }
        }, "vblk-aio-undrained-" + REAPERS.incrementAndGet());
        t.setDaemon(true);
        t.start();
    }

    /** Back ends closed undrained whose operations the kernel has not finished (or never will be freed). */
    static int count() {
        return KEPT.size();
    }
}
