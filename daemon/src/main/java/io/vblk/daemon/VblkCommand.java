package io.vblk.daemon;

import java.io.PrintStream;

/**
 * A {@code vblk} subcommand that lives in a module above this one ({@code vblk bench} in perf),
 * found with {@link java.util.ServiceLoader} when that module is on the class path. The daemon
 * cannot depend on such a module (the reactor's order is its dependency order), so the module
 * registers its command here instead: with it on the class path, {@code vblk --help} lists it
 * and the generated completion script completes it; without it, the command is simply absent.
 */
public interface VblkCommand {
    /**
     * A new picocli command object (annotated with {@code @Command}) that writes to {@code out}
     * and {@code err}. Its bad arguments may throw {@link picocli.CommandLine.ParameterException}
     * from {@code call()}: they are reported like every other usage error, one line and status 2.
     */
    Object create(PrintStream out, PrintStream err);
}
