package io.vblk.perf;

import java.io.PrintStream;

import io.vblk.daemon.Main;

/**
 * The entry point {@code scripts/vblk bench} dispatches to: {@code vblk bench ARGS} through the
 * daemon's command line, to which perf adds {@link BenchCommand} (so usage errors, help and
 * {@code --version} look like every other vblk command's).
 */
public final class BenchMain {
    private BenchMain() {
    }

    /** Runs {@code vblk bench ARGS} and exits with its status. */
    public static void main(String[] args) {
        int status = run(args, System.out, System.err);
        System.out.flush();
        System.err.flush();
        System.exit(status);
    }

    /** Runs {@code vblk bench ARGS}; returns the exit status. */
    static int run(String[] args, PrintStream out, PrintStream err) {
        String[] withCommand = new String[args.length + 1];
        withCommand[0] = "bench";
        System.arraycopy(args, 0, withCommand, 1, args.length);
        return Main.commandLine(out, err, false).execute(withCommand);
    }
}
