package io.vblk.perf.engine;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import io.vblk.aio.BackendKind;
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.WaitStrategy;
import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.load.RunObserver;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;

/**
 * The engine's own benchmark (not a test): the null back end, one queue, queue depth 1 and 128,
 * under each wait strategy and threading mode; IOPS, guest-measured latency percentiles, device
 * CPU per I/O and bytes allocated per I/O on the data-plane threads. A fixed matrix over
 * {@link EmbeddedContender}; {@code vblk bench --backend null --wait ... --threading ...} runs the
 * same cells with every other option.
 *
 * <pre>
 * java ... io.vblk.perf.engine.EngineBench [seconds-per-cell] [wait,...] [mode,...] [depth,...] [guest: irq|poll,...]
 * </pre>
 * The guest either sleeps until interrupted ({@code irq}) or polls the used ring ({@code poll}).
 */
public final class EngineBench {
    private EngineBench() {
    }

    public static void main(String[] args) {
        double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 3;
        List<WaitStrategy> waits = new ArrayList<>();
        for (String w : (args.length > 1 ? args[1] : "busy-spin,yielding,sleeping,blocking,adaptive").split(",")) {
            waits.add(WaitStrategy.parse(w));
        }
        List<ThreadingMode> modes = new ArrayList<>();
        for (String m : (args.length > 2 ? args[2] : "shared,dedicated").split(",")) {
            modes.add(ThreadingMode.parse(m));
        }
        String[] depths = (args.length > 3 ? args[3] : "1,128").split(",");
        String[] guests = (args.length > 4 ? args[4] : "irq,poll").split(",");
        System.out.printf(Locale.ROOT, "%-10s %-9s %-5s %5s %12s %9s %9s %9s %10s %9s%n",
                "wait", "mode", "guest", "depth", "IOPS", "p50 us", "p99 us", "p99.9 us", "cpu us/io", "B/io");
        for (String d : depths) {
            for (String guest : guests) {
                for (ThreadingMode mode : modes) {
                    for (WaitStrategy wait : waits) {
                        BenchResult r = runOne(wait, mode, Integer.parseInt(d.trim()), seconds, "poll".equals(guest.trim()));
                        System.out.printf(Locale.ROOT, "%-10s %-9s %-5s %5s %12.0f %9.2f %9.2f %9.2f %10.3f %9.4f%n",
                                wait.cliName(), mode.name().toLowerCase(Locale.ROOT), guest.trim(), d.trim(), r.iops(),
                                r.latencyUs(50), r.latencyUs(99), r.latencyUs(99.9), r.cpuUsPerIo(), r.allocBytesPerIo());
                    }
                }
            }
        }
    }

    /** One cell: a fresh device on the null back end and a fresh guest. */
    public static BenchResult runOne(WaitStrategy wait, ThreadingMode mode, int depth, double seconds, boolean guestPolls) {
        long runNs = (long) (seconds * 1e9);
        Workload w = Workload.randomReads(depth, Math.min(1_000_000_000L, runNs / 2), runNs).withGuestPolls(guestPolls);
        EmbeddedContender device = new EmbeddedContender(DiskSpec.nullDevice(1L << 30), BackendKind.NULL, wait, mode, 1);
        return device.run("engine-" + wait.cliName() + "-" + depth, w, RunObserver.NONE);
    }
}
