package io.vblk.daemon;

import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

import io.vblk.vhost.Log;

/**
 * {@code vblk serve}: the one-export shortcut of {@code vblk daemon}. The same code serves: a
 * daemon with one export (id {@code disk0} unless {@code --id}), with no control socket unless
 * {@code --control}.
 */
@Command(name = "serve", mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = {"Serves a disk image as a vhost-user-blk backend on a Unix socket, to one frontend at a time "
            + "(QEMU's vhost-user-blk-pci, Cloud Hypervisor, ...). After a frontend disconnects it keeps listening for "
            + "the next. SIGINT or SIGTERM drain in-flight requests, remove the socket and exit with status 0."},
        footer = {"", "Exit status: 0 after a clean shutdown, 2 for a bad argument, 1 for any other failure."})
final class ServeCommand implements Callable<Integer> {
    static final String DEFAULT_ID = "disk0";

    @ParentCommand
    Main parent;

    @Mixin
    ExportOptions export;

    @Option(names = "--metrics", paramLabel = "ADDR:PORT", description = "serve Prometheus metrics at http://ADDR:PORT/metrics")
    String metrics;

    @Override
    public Integer call() {
        Main.Context ctx = parent.context;
        Log log = Log.to(ctx.err());
        if (export.image == null) {
            throw new InvalidParams("--image is required");
        }
        if (export.socket == null) {
            throw new InvalidParams("--socket is required");
        }
        ExportSpec spec = ExportSpec.parse(Params.commandLine(export.toParams()), DEFAULT_ID);
        MetricsEndpoint.Address address = metrics == null ? null : MetricsEndpoint.Address.parse(metrics);
        Daemon daemon = new Daemon(log);
        Export e;
        try {
            e = daemon.add(spec);
        } catch (RpcError err) {
            throw new InvalidParams(err.getMessage());
        }
        MetricsEndpoint endpoint;
        try {
            endpoint = address == null ? null : MetricsEndpoint.start(address, daemon);
        } catch (InvalidParams err) {
            daemon.close();
            throw err;
        }
        ctx.out().println("vblk: serving " + e.describe() + " on " + e.socketPath());
        ctx.out().flush();
        return Lifecycle.runUntilShutdown(daemon, log, ctx.signals(), endpoint);
    }
}
