package io.vblk.perf;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.List;

/**
 * {@code vblk bench}: measures vblk's data plane the way fio measures a disk. Without options it
 * runs a short default profile (embedded, io_uring, 4 KiB random reads at depth 32 and 128 on a
 * cached 1 GiB image); the options choose the workload, the back end, wait strategy, threading
 * mode and transport (the engine in this JVM, or any vhost-user-blk backend driven by this
 * process as frontend); {@code --compare} runs vblk against its contenders. See
 * {@link BenchOptions#USAGE}.
 *
 * <p>Exit status: 0 when every run completed, 1 when one failed, 2 for a bad option (reported
 * in one line).
 */
public final class BenchMain {
    private BenchMain() {
    }

    /** The entry point {@code scripts/vblk bench} dispatches to. */
    public static void main(String[] args) {
        int status = run(args, System.out, System.err);
        System.out.flush();
        System.exit(status);
    }

    /** Runs with {@code args}; returns the exit status. */
    static int run(String[] args, PrintStream out, PrintStream err) {
        BenchOptions options;
        try {
            options = BenchOptions.parse(args);
        } catch (UsageError e) {
            err.println("vblk bench: " + e.getMessage() + " (see vblk bench --help)");
            return 2;
        }
        if (options.help) {
            out.print(BenchOptions.USAGE);
            return 0;
        }
        List<String> argList = Arrays.asList(args);
        try {
            return options.compare ? new CompareSuite(options, argList, out, err).run()
                    : new WorkloadRun(options, argList, out, err).run();
        } catch (UsageError e) {
            err.println("vblk bench: " + e.getMessage() + " (see vblk bench --help)");
            return 2;
        } catch (Exception | Error e) {
            err.println("vblk bench: " + (e.getMessage() == null ? e.toString() : e.getMessage()));
            if (Boolean.getBoolean("vblk.bench.trace")) {
                e.printStackTrace(err);
            }
            return 1;
        }
    }
}
