package io.vblk.daemon;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.time.LocalTime;
import java.time.format.DateTimeFormatter;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

/**
 * {@code vblk stat}: live per-queue IOPS, MB/s read and written, queue depth and latency of a
 * daemon's exports, one block per interval, like {@code iostat -x} ({@code rkB/s}, {@code wkB/s}). It reads {@code export.stats} over the control
 * socket: counters read with volatile loads and a copy of the latency histogram, so watching
 * never stops or slows the data plane.
 */
@Command(name = "stat", mixinStandardHelpOptions = true, versionProvider = Version.class,
        description = {"Shows live per-queue IOPS, MB/s read and written, queue depth and latency of a daemon's exports,"
            + " every interval.",
            "",
            "IOPS, rMB/s (read) and wMB/s (written) are over the last interval (discard and write-zeroes ranges move no"
            + " data and are in neither); the latency columns (p50, p99, max; marked *) are since the export "
            + "started, or since an export.stats call with reset_latency (which resets them for every reader, so stat never "
            + "makes one)."},
        footer = {"", "Exit status: 0 after --count reports, 1 when the daemon answers with an error or cannot be reached, "
            + "2 for a bad argument (also an --id the daemon has no export of)."})
final class StatCommand implements Callable<Integer> {
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("HH:mm:ss");

    @ParentCommand
    Main parent;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Option(names = "--control", paramLabel = "PATH", required = true, description = "the daemon's control socket")
    Path control;

    @Option(names = "--id", paramLabel = "ID", description = "only this export (default: all)")
    String id;

    @Option(names = "--interval", paramLabel = "SECONDS", defaultValue = "1", description = "seconds between reports (default 1)")
    double interval;

    @Option(names = "--count", paramLabel = "N", defaultValue = "0", description = "stop after N reports (default 0: run until interrupted)")
    int count;

    /**
     * Counters at the previous report, by export and queue: only what that report saw (an
     * export removed since is forgotten, so the map does not grow with every id ever seen).
     */
    private Map<String, long[]> previous = new HashMap<>();

    @Override
    public Integer call() throws InterruptedException {
        if (interval <= 0 || interval > 3600) {
            throw new InvalidParams("--interval must be above 0 and at most 3600 seconds, got " + interval);
        }
        if (count < 0) {
            throw new InvalidParams("--count must be at least 0, got " + count);
        }
        PrintStream out = parent.context.out();
        try (ControlClient client = ControlClient.connect(control)) {
            long last = System.nanoTime();
            try {
                sample(client, out, 0);
            } catch (RpcError e) {
                if (id != null && e.code == RpcError.NOT_FOUND) {
                    // The daemon answers: --id names none of its exports, a bad argument as for ctl.
                    return Main.usageLine(spec.commandLine(), "--id: " + e.getMessage());
                }
                throw e;
            }
            out.println("(* latency since the export started, not per interval)"); // once there is something to report
            for (int n = 0; count == 0 || n < count; n++) {
                Thread.sleep((long) (interval * 1000));
                long now = System.nanoTime();
                sample(client, out, (now - last) / 1e9);
                last = now;
            }
        } catch (RpcError e) {
            parent.context.err().println("vblk stat: " + e.getMessage());
            return 1;
        } catch (IOException e) {
            parent.context.err().println("vblk stat: cannot reach the daemon at " + control + ": " + e.getMessage()
                    + ControlClient.staleHint(control, e));
            return 1;
        }
        return 0;
    }

    /** Reads every export's stats; prints rates when {@code seconds} > 0 (not for the first sample). */
    @SuppressWarnings("unchecked")
    private void sample(ControlClient client, PrintStream out, double seconds) throws IOException {
        List<String> ids;
        if (id != null) {
            ids = List.of(id);
        } else {
            ids = ((List<Map<String, Object>>) client.result("export.list", null)).stream()
                    .map(m -> (String) m.get("id")).toList();
        }
        if (seconds > 0) {
            out.printf(Locale.ROOT, "%s%n%-16s %5s %10s %9s %9s %6s %9s %9s %9s  %s%n", LocalTime.now().format(TIME),
                    "export", "queue", "IOPS", "rMB/s", "wMB/s", "depth", "p50 us*", "p99 us*", "max us*", "state");
        }
        Map<String, long[]> seen = new HashMap<>();
        for (String exportId : ids) {
            Map<String, Object> stats;
            try {
                stats = (Map<String, Object>) client.result("export.stats", Map.of("id", exportId));
            } catch (RpcError e) {
                if (id == null && e.code == RpcError.NOT_FOUND) {
                    continue; // removed since export.list (another client's change): not this report's
                }
                throw e;
            }
            for (Map<String, Object> q : (List<Map<String, Object>>) stats.get("queues")) {
                int queue = ((Number) q.get("queue")).intValue();
                long completions = ((Number) q.get("completions")).longValue();
                // A daemon older than the split (no read_bytes) shows "?" for both directions.
                boolean split = q.get("read_bytes") instanceof Number && q.get("write_bytes") instanceof Number;
                long read = split ? ((Number) q.get("read_bytes")).longValue() : 0;
                long written = split ? ((Number) q.get("write_bytes")).longValue() : 0;
                long[] now = {completions, read, written};
                String key = exportId + "/" + queue;
                seen.put(key, now);
                long[] before = previous.get(key);
                if (before != null && (completions < before[0] || read < before[1] || written < before[2])) {
                    before = null; // counters went back: the id names a new export (removed and added again)
                }
                if (seconds <= 0) {
                    continue;
                }
                double iops = before == null ? 0 : (completions - before[0]) / seconds;
                String rmbs = split ? mbs(before == null ? 0 : read - before[1], seconds) : "?";
                String wmbs = split ? mbs(before == null ? 0 : written - before[2], seconds) : "?";
                Map<String, Object> lat = (Map<String, Object>) q.get("latency");
                out.printf(Locale.ROOT, "%-16s %5d %10.0f %9s %9s %6d %9.1f %9.1f %9.1f  %s%n", exportId, queue, iops, rmbs, wmbs,
                        ((Number) q.get("in_flight")).longValue(), num(lat.get("p50_us")), num(lat.get("p99_us")),
                        num(lat.get("max_us")), q.get("state"));
            }
        }
        previous = seen;
        if (seconds > 0) {
            out.println();
            out.flush();
        }
    }

    /** {@code bytes} over {@code seconds} in MB/s, one decimal. */
    private static String mbs(long bytes, double seconds) {
        return String.format(Locale.ROOT, "%.1f", bytes / seconds / 1e6);
    }

    private static double num(Object o) {
        return o instanceof Number n ? n.doubleValue() : 0;
    }
}
