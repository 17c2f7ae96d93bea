package io.vblk.perf.load;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * CPU time of another process (and its descendants) between {@link #begin()} and
 * {@link #end()}: the sum over its threads of the run time in {@code /proc/PID/task/TID/schedstat}
 * (nanoseconds, user and system). Threads that exit inside the window are lost; a data plane's
 * threads live as long as the device. The same reads give the time its threads spent runnable
 * but waiting for a CPU ({@link #waitNs()}, schedstat's second field), and {@link #begin()} and
 * {@link #end()}, called on the guest thread, the calling thread's own ({@link #callerWaitNs()}):
 * on a machine with more runnable threads than CPUs a round trip's time goes mostly there, and a
 * contender that lost a run lost it either to its own CPU per I/O or to that wait.
 */
public final class ProcessMeter implements LoadGenerator.Meter {
    private final long pid;
    private long cpu0;
    private long cpuNs = -1;
    private long wait0;
    private long waitNs = -1;
    private long callerWait0;
    private long callerWaitNs = -1;

    /** Meters process {@code pid}; a negative pid meters nothing ({@link #cpuNs()} is NaN). */
    public ProcessMeter(long pid) {
        this.pid = pid;
    }

    @Override
    public void begin() {
        callerWait0 = callerWait();
        if (pid > 0) {
            long[] s = schedOf(pid);
            cpu0 = s[0];
            wait0 = s[1];
        }
    }

    @Override
    public void end() {
        if (pid > 0) {
            long[] s = schedOf(pid);
            cpuNs = s[0] - cpu0;
            waitNs = s[1] - wait0;
        }
        long w = callerWait();
        callerWaitNs = w >= 0 && callerWait0 >= 0 ? w - callerWait0 : -1;
    }

    /** Nanoseconds the process's threads spent runnable but waiting for a CPU in the window, NaN when not metered. */
    public double waitNs() {
        return waitNs < 0 ? Double.NaN : waitNs;
    }

    /** Nanoseconds the thread that called {@link #begin()} and {@link #end()} spent waiting for a CPU between them, NaN when unknown. */
    public double callerWaitNs() {
        return callerWaitNs < 0 ? Double.NaN : callerWaitNs;
    }

    /** CPU nanoseconds in the window, NaN when not metered. */
    public double cpuNs() {
        return cpuNs < 0 ? Double.NaN : cpuNs;
    }

    /** CPU nanoseconds {@code pid} and its descendants have used so far. */
    public static long cpuOf(long pid) {
        return schedOf(pid)[0];
    }

    /** CPU and run-queue wait nanoseconds of {@code pid} and its descendants so far, summed over their threads. */
    static long[] schedOf(long pid) {
        List<Long> pids = new ArrayList<>();
        pids.add(pid);
        ProcessHandle.of(pid).ifPresent(h -> h.descendants().forEach(d -> pids.add(d.pid())));
        long[] sum = new long[2];
        for (long p : pids) {
            try (DirectoryStream<Path> tasks = Files.newDirectoryStream(Path.of("/proc", Long.toString(p), "task"))) {
                for (Path task : tasks) {
                    long[] s = schedstat(task.resolve("schedstat"));
                    sum[0] += Math.max(0, s[0]);
                    sum[1] += Math.max(0, s[1]);
                }
            } catch (IOException e) {
                // the process ended: its time is gone with it
            }
        }
        return sum;
    }

    /** The calling thread's run-queue wait so far, -1 when unknown. */
    private static long callerWait() {
        return schedstat(Path.of("/proc/thread-self/schedstat"))[1];
    }

    /** A schedstat file's run time and run-queue wait in ns, -1 each when unreadable. */
    private static long[] schedstat(Path schedstat) {
        try {
            String[] f = Files.readString(schedstat).trim().split(" ");
            return new long[] {Long.parseLong(f[0]), f.length > 1 ? Long.parseLong(f[1]) : -1};
        } catch (IOException | RuntimeException e) {
            return new long[] {-1, -1};
        }
    }
}
