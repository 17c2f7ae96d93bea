package io.vblk.perf;

import java.io.PrintStream;
import java.util.List;
import java.util.concurrent.Callable;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

import io.vblk.daemon.VblkCommand;
import io.vblk.daemon.Version;
import io.vblk.perf.vhost.VhostUserContender;

/**
 * {@code vblk bench}: measures vblk's data plane the way fio measures a disk. Without options it
 * runs a short default profile (embedded, io_uring, 4 KiB random reads at depth 32 and 128 on a
 * cached 1 GiB image); the options ({@link BenchOptions}) choose the workload, the back end, wait
 * strategy, threading mode and transport (the engine in this JVM, or any vhost-user-blk backend
 * driven by this process as frontend); {@code --compare} runs vblk against its contenders
 * ({@link CompareSuite}).
 *
 * <p>A subcommand of the daemon's {@code vblk} command line, joined through {@link Provider}
 * (the daemon cannot depend on perf). Exit status: 0 when every run completed, 1 when one
 * failed, 2 for a bad option (one line on stderr).
 */
@Command(name = "bench", mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        usageHelpWidth = 110,
        customSynopsis = {"vblk bench [options]             a short default profile, or the workload the options give",
            "       vblk bench --compare [options]   vblk against its contenders, alternating them", ""},
        description = {"Benchmarks the data plane: a short default profile, the workload the options give, or (--compare) vblk "
            + "against its contenders, alternating them.",
            "",
            "With no options: vblk embedded in this JVM, io_uring, 4 KiB random reads at depth 32 and 128, 5 s each, on a "
                + "1 GiB image in /var/tmp that is created, written full of data and cached. List options take a,b,c and "
                + "run every combination.", ""},
        footer = {"", "Exit status: 0 when every run completed, 1 when a run failed, 2 for a bad option."})
public final class BenchCommand implements Callable<Integer> {
    @Mixin
    BenchOptions options;

    @Spec
    CommandSpec spec;

    private final PrintStream out;
    private final PrintStream err;

    BenchCommand(PrintStream out, PrintStream err) {
        this.out = out;
        this.err = err;
    }

    /** Registers {@code bench} with the daemon's {@code vblk} command line (META-INF/services). */
    public static final class Provider implements VblkCommand {
        /** For {@link java.util.ServiceLoader}. */
        public Provider() {
        }

        @Override
        public Object create(PrintStream out, PrintStream err) {
            return commandLine(new BenchCommand(out, err));
        }
    }

    /** The command line of {@code command}: a later value of a single-valued option replaces an earlier one. */
    static CommandLine commandLine(BenchCommand command) {
        return new CommandLine(command).setOverwrittenOptionsAllowed(true);
    }

    @Override
    public Integer call() {
        options.check();
        VhostUserContender.blockingEventFds(options.blockingEventFds);
        io.vblk.perf.load.LoadGenerator.exposeEachRequest("each".equals(options.guestPublish));
        List<String> args = arguments();
        try {
            return options.compare ? new CompareSuite(options, args, out, err).run() : new WorkloadRun(options, args, out, err).run();
        } catch (ParameterException e) {
            throw e;
        } catch (Exception | Error e) {
            err.println("vblk bench: " + (e.getMessage() == null ? e.toString() : e.getMessage()));
            if (Boolean.getBoolean("vblk.bench.trace")) {
                e.printStackTrace(err);
            }
            return 1;
        }
    }

    /** The arguments after {@code bench}, for the reports' "command" line. */
    private List<String> arguments() {
        List<String> all = spec.commandLine().getParseResult().originalArgs();
        return !all.isEmpty() && all.get(0).equals(spec.name()) ? all.subList(1, all.size()) : all;
    }
}
