package io.vblk.aio;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * Back ends whose {@link IoBackend#close()} gave up waiting for the kernel (a hung FUSE or NFS
 * file, a frozen disk): kept reachable here, so that nothing the kernel may still write (slots,
 * bounce buffers, rings, iocbs) is freed by the collector, and counted for metrics. One reaper
 * thread for them all (a daemon, started on the first one) looks at each in turn, waiting a
 * short slice in each for the kernel, off every control path, and frees what a back end held
 * once nothing of it is in flight (then its {@link IoBackend#whenDrained} actions run, on that
 * thread). So a hung file that strands many back ends costs one thread, not one each. A
 * single-issuer ring closed by another thread than its owner cannot be waited for in the ring
 * (EEXIST): it is closed, and the reaper watches for the kernel to free it (the ring's exit
 * watch) instead. A back end the reaper can tell nothing of stays here for the JVM's life
 * (leaked, never freed under the kernel).
 */
final class Undrained {
    private static final Set<SlottedBackend> KEPT = ConcurrentHashMap.newKeySet();
    private static final System.Logger LOG = System.getLogger(IoBackend.class.getName());
    /** The reaper's name: one thread, whatever the number of back ends it waits for. */
    static final String REAPER_NAME = "vblk-aio-undrained-reaper";
    /** How long the reaper waits in one back end per look. */
    private static final long SLICE_NS = TimeUnit.MILLISECONDS.toNanos(1);
    /** The pause between rounds of looks that released nothing: doubles from the first to the last. */
    private static final long FIRST_PAUSE_MS = 5;
    private static final long LONGEST_PAUSE_MS = 500;

    /** Back ends the reaper waits for (guarded by itself), in the order they came. */
    private static final List<SlottedBackend> WAITING = new ArrayList<>();
    /** The reaper, once started (guarded by {@link #WAITING}). */
    private static Thread reaper;
    /** A back end came since the reaper's last round (guarded by {@link #WAITING}): look soon. */
    private static boolean fresh;

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
     * waitedNs}: keeps it, says so once, and hands it to the reaper ({@link
     * SlottedBackend#reapStep}) unless it cannot be reaped ({@code reapable} false).
     */
    static void kept(SlottedBackend backend, int inFlight, long waitedNs, boolean reapable) {
        KEPT.add(backend);
        LOG.log(System.Logger.Level.WARNING, backend.getClass().getSimpleName() + " on " + backend.image + ": closed with "
                + inFlight + " operation(s) still with the kernel after " + TimeUnit.NANOSECONDS.toMillis(waitedNs)
                + " ms: its slots, buffers and rings are kept until the kernel finishes them"
                + (reapable ? " (the reaper waits)" : " (never: they stay for the JVM's life)"));
        if (!reapable) {
            return;
        }
        synchronized (WAITING) {
            WAITING.add(backend);
            fresh = true;
            if (reaper == null) {
                reaper = unpinnedDaemon(REAPER_NAME, Undrained::reap);
                reaper.start();
            }
            WAITING.notifyAll();
        }
    }

    /**
     * A daemon thread (not started) that first takes the process's CPU set and then runs {@code
     * body}. A thread inherits its creator's affinity, and the reaper is created by whichever
     * thread first closes undrained: a device's I/O thread pinned to one CPU would otherwise pin
     * it there for the JVM's life.
     */
    static Thread unpinnedDaemon(String name, Runnable body) {
        Thread t = new Thread(() -> {
            takeProcessCpus(name);
            body.run();
        }, name);
        t.setDaemon(true);
        return t;
    }

    /**
     * Sets the calling thread's affinity to the process's CPU set: the thread group leader's
     * {@code Cpus_allowed_list} (a process started under taskset keeps to it; vblk never pins
     * the JVM's first thread). On failure it says so and leaves the affinity as it is.
     */
    private static void takeProcessCpus(String name) {
        try {
            String list = null;
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("Cpus_allowed_list:")) {
                    list = line.substring("Cpus_allowed_list:".length()).trim();
                }
            }
            if (list == null || list.isEmpty()) {
                throw new IOException("no Cpus_allowed_list in /proc/self/status");
            }
            int words = 1;
            for (String range : list.split(",")) {
                String[] ends = range.split("-");
                words = Math.max(words, Integer.parseInt(ends[ends.length - 1].trim()) / 64 + 1);
            }
            NativeBuffer mask = new NativeBuffer(words * Long.BYTES);
            for (String range : list.split(",")) {
                String[] ends = range.split("-");
                int first = Integer.parseInt(ends[0].trim());
                int last = Integer.parseInt(ends[ends.length - 1].trim());
                for (int cpu = first; cpu <= last; cpu++) {
                    int at = cpu / 64 * Long.BYTES;
                    mask.buffer().putLong(at, mask.buffer().getLong(at) | (1L << (cpu % 64)));
                }
            }
            if (Native.libc().sched_setaffinity(0, (long) words * Long.BYTES, mask.address()) != 0) {
                throw new IOException("sched_setaffinity(" + list + "): " + Native.libc().strerror(Native.errno()));
            }
        } catch (IOException | RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, name + " keeps its creator's CPU affinity: " + e);
        }
    }

    /** The reaper's loop: a round of looks at every back end waiting, then a pause (longer while nothing ends). */
    private static void reap() {
        List<SlottedBackend> round = new ArrayList<>();
        long pauseMs = FIRST_PAUSE_MS;
        while (true) {
            try {
                synchronized (WAITING) {
                    while (WAITING.isEmpty()) {
                        WAITING.wait();
                    }
                    if (fresh) {
                        fresh = false;
                        pauseMs = FIRST_PAUSE_MS;
                    }
                    round.clear();
                    round.addAll(WAITING);
                }
                boolean ended = false;
                for (SlottedBackend backend : round) {
                    ended |= look(backend);
                }
                round.clear();
                synchronized (WAITING) {
                    if (!ended && !fresh && !WAITING.isEmpty()) {
                        WAITING.wait(pauseMs);
                    }
                }
                pauseMs = ended ? FIRST_PAUSE_MS : Math.min(LONGEST_PAUSE_MS, pauseMs * 2);
            } catch (InterruptedException e) {
                // Nobody interrupts it on purpose; it must outlive anyone who tries.
            } catch (RuntimeException | Error e) {
                LOG.log(System.Logger.Level.WARNING, "the reaper of undrained back ends failed a round; it goes on", e);
            }
        }
    }

    /** One look at {@code backend}; true when it left the reaper's care (released, or kept for ever). */
    private static boolean look(SlottedBackend backend) {
        int outcome;
        try {
            outcome = backend.reapStep(SLICE_NS);
        } catch (RuntimeException | Error e) {
            LOG.log(System.Logger.Level.WARNING, backend.getClass().getSimpleName() + " on " + backend.image
                    + ": reaping it failed: kept for the JVM's life", e);
            outcome = SlottedBackend.KEPT_FOR_EVER;
        }
        if (outcome == SlottedBackend.STILL_HELD) {
            return false;
        }
        synchronized (WAITING) {
            WAITING.remove(backend);
        }
        if (outcome == SlottedBackend.REAPED) {
            KEPT.remove(backend);
            LOG.log(System.Logger.Level.INFO, backend.getClass().getSimpleName() + " on " + backend.image
                    + ": the kernel finished what an undrained close left; released");
            backend.runDrainedActions();
        } else {
            LOG.log(System.Logger.Level.WARNING, backend.getClass().getSimpleName() + " on " + backend.image
                    + ": the kernel's operations cannot be awaited from here: kept for the JVM's life");
        }
        return true;
    }

    /** Back ends closed undrained whose operations the kernel has not finished (or never will be freed). */
    static int count() {
        return KEPT.size();
    }
}
