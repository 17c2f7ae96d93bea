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
 * threads live as long as the device.
 */
public final class ProcessMeter implements LoadGenerator.Meter {
    private final long pid;
    private long cpu0;
    private long cpuNs = -1;

    /** Meters process {@code pid}; a negative pid meters nothing ({@link #cpuNs()} is NaN). */
    public ProcessMeter(long pid) {
        this.pid = pid;
    }

    @Override
    public void begin() {
        cpu0 = pid > 0 ? cpuOf(pid) : 0;
    }

    @Override
    public void end() {
        cpuNs = pid > 0 ? cpuOf(pid) - cpu0 : -1;
    }

    /** CPU nanoseconds in the window, NaN when not metered. */
    public double cpuNs() {
        return cpuNs < 0 ? Double.NaN : cpuNs;
    }

    /** CPU nanoseconds {@code pid} and its descendants have used so far. */
    public static long cpuOf(long pid) {
        List<Long> pids = new ArrayList<>();
        pids.add(pid);
        ProcessHandle.of(pid).ifPresent(h -> h.descendants().forEach(d -> pids.add(d.pid())));
        long sum = 0;
        for (long p : pids) {
            try (DirectoryStream<Path> tasks = Files.newDirectoryStream(Path.of("/proc", Long.toString(p), "task"))) {
                for (Path task : tasks) {
                    sum += runTimeNs(task.resolve("schedstat"));
                }
            } catch (IOException e) {
                // the process ended: its time is gone with it
            }
        }
        return sum;
    }

    private static long runTimeNs(Path schedstat) {
        try {
            String s = Files.readString(schedstat).trim();
            int space = s.indexOf(' ');
            return Long.parseLong(space < 0 ? s : s.substring(0, space));
        } catch (IOException | NumberFormatException e) {
            return 0;
        }
    }
}
