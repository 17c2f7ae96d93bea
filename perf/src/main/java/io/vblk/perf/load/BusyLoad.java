package io.vblk.perf.load;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Competing busy processes, the way an oversubscribed host has them: each a child process that
 * spins on the CPU without a syscall ({@code sh -c 'while :; do :; done'}), not pinned, so the
 * kernel's scheduler places them as it would any other tenant's vCPU thread. They run until
 * {@link #close()}, which kills them and waits for them; a shutdown hook kills them too if this
 * JVM is interrupted first, so none is left spinning on a shared machine.
 */
public final class BusyLoad implements AutoCloseable {
    /** The command each competing process runs. */
    public static final List<String> COMMAND = List.of("/bin/sh", "-c", "while :; do :; done");
    private static final long STOP_TIMEOUT_MS = 5_000;

    private final List<Process> processes = new ArrayList<>();
    private final Thread hook = new Thread(this::kill, "vblk-bench-busy-load-reaper");

    private BusyLoad() {
        Runtime.getRuntime().addShutdownHook(hook);
    }

    /**
     * Starts {@code count} busy processes (none for 0).
     *
     * @throws IOException when one cannot be started; those already started are killed
     */
    public static BusyLoad start(int count) throws IOException {
        if (count < 0) {
            throw new IllegalArgumentException("busy process count must be at least 0, got " + count);
        }
        BusyLoad load = new BusyLoad();
        try {
            for (int i = 0; i < count; i++) {
                load.processes.add(new ProcessBuilder(COMMAND).redirectErrorStream(true)
                        .redirectOutput(ProcessBuilder.Redirect.DISCARD).start());
            }
        } catch (IOException | RuntimeException e) {
            load.close();
            throw e;
        }
        return load;
    }

    /** How many are running. */
    public int count() {
        return processes.size();
    }

    /** Their process ids, for the report. */
    public List<Long> pids() {
        List<Long> pids = new ArrayList<>();
        processes.forEach(p -> pids.add(p.pid()));
        return pids;
    }

    /** Whether every one still runs (a process that died would make the column lie). */
    public boolean allAlive() {
        return processes.stream().allMatch(Process::isAlive);
    }

    private void kill() {
        processes.forEach(Process::destroyForcibly);
    }

    /** Kills them (SIGKILL: a spinning shell has nothing to clean up) and waits until they are gone. */
    @Override
    public void close() {
        kill();
        for (Process p : processes) {
            try {
                p.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException e) {
            // already shutting down: the hook runs anyway
        }
    }
}
