package io.vblk.daemon;

import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.util.ServiceLoader;
import java.util.concurrent.Callable;

import picocli.AutoComplete;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * The {@code vblk} command line: {@code serve} (one export), {@code daemon} (many, changed at
 * run time), {@code ctl} and {@code stat} (talk to a daemon), and a completion script generator.
 * {@code bench} lives in the perf module, above this one: it joins as a {@link VblkCommand}
 * when perf is on the class path (perf's jar; {@code scripts/vblk bench} runs that).
 *
 * <p>Every bad argument is one line on stderr naming it, and exit status 2.
 */
@Command(name = "vblk", mixinStandardHelpOptions = true, versionProvider = Version.class,
        description = "A virtio-blk data plane for the JVM: vhost-user-blk exports and their control plane.",
        subcommands = {ServeCommand.class, DaemonCommand.class, CtlCommand.class, StatCommand.class,
            AutoComplete.GenerateCompletion.class},
        footer = {"", "vblk bench (the benchmarks) is listed when the perf module is on the class path; scripts/vblk bench runs it."})
public final class Main implements Callable<Integer> {
    /** Where commands write, and whether serve and daemon install their SIGINT/SIGTERM hook. */
    record Context(PrintStream out, PrintStream err, boolean signals) {
    }

    final Context context;

    @Spec
    CommandSpec spec;

    private Main(Context context) {
        this.context = context;
    }

    @Override
    public Integer call() {
        context.err().println("vblk: a command is required (serve, daemon, ctl, stat; see vblk --help)");
        return 2;
    }

    /** Runs the command line and exits with its status. */
    public static void main(String[] args) {
        int status = run(args, System.out, System.err, true);
        System.out.flush();
        System.err.flush();
        System.exit(status);
    }

    /**
     * Runs the command line and returns the exit status instead of exiting (for tests). With
     * {@code signals}, {@code serve} and {@code daemon} install their SIGINT/SIGTERM shutdown hook.
     */
    public static int run(String[] args, PrintStream out, PrintStream err, boolean signals) {
        CommandLine cl = commandLine(new Context(out, err, signals));
        return cl.execute(args);
    }

    /**
     * The whole command line, with every {@link VblkCommand} on the class path as a subcommand,
     * writing to {@code out} and {@code err}; bad arguments are one line on {@code err} and
     * status 2. Without {@code signals}, serve and daemon install no shutdown hook (for tests).
     */
    public static CommandLine commandLine(PrintStream out, PrintStream err, boolean signals) {
        return commandLine(new Context(out, err, signals));
    }

    static CommandLine commandLine(Context context) {
        CommandLine cl = new CommandLine(new Main(context));
        for (VblkCommand extra : ServiceLoader.load(VblkCommand.class, Main.class.getClassLoader())) {
            cl.addSubcommand(extra.create(context.out(), context.err()));
        }
        cl.setOut(new PrintWriter(context.out(), true, StandardCharsets.UTF_8));
        cl.setErr(new PrintWriter(context.err(), true, StandardCharsets.UTF_8));
        cl.setParameterExceptionHandler(Main::usageError);
        cl.setExecutionExceptionHandler((e, line, parsed) -> {
            if (e instanceof InvalidParams) {
                return usageLine(line, e.getMessage());
            }
            if (e instanceof RpcError && failure(e)) {
                // Not a bad argument: an image locked elsewhere, a server down, a refused open.
                line.getErr().println(line.getCommandSpec().qualifiedName() + ": " + e.getMessage());
                line.getErr().flush();
                return 1;
            }
            line.getErr().println(line.getCommandName() + ": " + e);
            return 1;
        });
        return cl;
    }

    /**
     * Whether {@code e} is a failure rather than a bad argument: status 1, so that a service
     * manager's RestartPreventExitStatus=2 tells a typo from a server not up yet.
     */
    static boolean failure(Throwable e) {
        return e instanceof RpcError r && (r.code == RpcError.OPEN_FAILED || r.code == RpcError.IN_USE);
    }

    private static int usageError(ParameterException e, String[] args) {
        return usageLine(e.getCommandLine(), e.getMessage());
    }

    /** One line on stderr, "vblk serve: message (see vblk serve --help)", and status 2. */
    static int usageLine(CommandLine line, String message) {
        String name = line.getCommandSpec().qualifiedName();
        line.getErr().println(name + ": " + message + " (see " + name + " --help)");
        line.getErr().flush();
        return 2;
    }
}
