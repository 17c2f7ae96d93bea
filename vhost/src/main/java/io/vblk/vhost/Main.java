package io.vblk.vhost;

import java.io.PrintStream;
import java.util.Arrays;

/**
 * The {@code vblk} command line. {@code serve} lives here; {@code bench} lives in the perf module
 * and {@code scripts/vblk} dispatches it there.
 */
public final class Main {
    static final String USAGE = String.join("\n",
            "Usage: vblk COMMAND [options]",
            "",
            "Commands:",
            "  serve   serve a disk image as a vhost-user-blk backend (vblk serve --help)",
            "  bench   benchmarks (run through scripts/vblk, which starts the perf module)",
            "");

    private Main() {
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
     * {@code signals}, {@code serve} installs its SIGINT/SIGTERM shutdown hook.
     */
    public static int run(String[] args, PrintStream out, PrintStream err, boolean signals) {
        if (args.length == 0) {
            err.print(USAGE);
            return 2;
        }
        String[] rest = Arrays.copyOfRange(args, 1, args.length);
        switch (args[0]) {
            case "serve":
                return new ServeCommand(out, err).run(rest, signals);
            case "bench":
                err.println("vblk: bench is in the perf module; run it as scripts/vblk bench");
                return 2;
            case "-h":
            case "--help":
            case "help":
                out.print(USAGE);
                return 0;
            default:
                err.println("vblk: unknown command '" + args[0] + "' (expected serve or bench; see vblk --help)");
                return 2;
        }
    }
}
