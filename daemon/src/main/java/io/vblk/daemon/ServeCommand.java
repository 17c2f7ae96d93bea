package io.vblk.daemon;

import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * {@code vblk serve}: the one-export shortcut of {@code vblk daemon}. The same code serves: a
 * daemon with one export (id {@code disk0} unless {@code --id}), with no control socket unless
 * {@code --control}.
 */
@Command(name = "serve", mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = {"Serves a disk image as a vhost-user-blk backend on a Unix socket, to one frontend at a time "
            + "(QEMU's vhost-user-blk-pci, Cloud Hypervisor, ...). After a frontend disconnects it keeps listening for "
            + "the next. SIGINT or SIGTERM drain in-flight requests, remove the socket and exit with status 0."},
        footer = {"", "Exit status: 0 after a clean shutdown, 2 for a bad argument, 1 for any other failure (an image "
            + "locked by another process, an NBD server down or not up yet, permission denied, an I/O error, a socket in use "
            + "by another process)."})
final class ServeCommand implements Callable<Integer> {
    static final String DEFAULT_ID = "disk0";

    @ParentCommand
    Main parent;

    @Mixin
    ExportOptions export;

    @Option(names = "--metrics", paramLabel = "ADDR:PORT", description = "serve Prometheus metrics at http://ADDR:PORT/metrics")
    String metrics;

    @Option(names = "--guest-memory-budget", paramLabel = "SIZE", converter = ByteSizeConverter.class, description = "the "
            + "most guest memory the frontends of all exports may map at once (default: the host's memory, or the memory "
            + "cgroup's limit when smaller); a memory table past it is refused")
    Long guestMemoryBudget;

    @Option(names = "--control", paramLabel = "PATH", description = "also listen for JSON-RPC requests at PATH (mode 0600), "
            + "as vblk daemon does: export.stats, export.resize, export.set_limits, ... (vblk ctl)")
    String control;

    @Override
    public Integer call() {
        Main.Context ctx = parent.context;
        Log log = Log.to(ctx.err());
        if (guestMemoryBudget != null) {
            try {
                io.vblk.vhost.VhostUserServer.guestMemoryBudget(guestMemoryBudget);
            } catch (IllegalArgumentException e) {
                throw new InvalidParams("--guest-memory-budget: " + e.getMessage());
            }
        }
        if (export.image == null) {
            throw new InvalidParams("--image is required");
        }
        if (export.socket == null) {
            throw new InvalidParams("--socket is required");
        }
        ExportSpec spec = ExportSpec.parse(Params.commandLine(export.toParams()), DEFAULT_ID);
        MetricsEndpoint.Address address = metrics == null ? null : MetricsEndpoint.Address.parse(metrics);
        if (control != null) {
            // Before the export opens: a wrong path is one line, with no export served and removed
            // first, and a running daemon keeps its socket.
            try {
                SocketFile.check(Path.of(control));
            } catch (IllegalArgumentException err) {
                throw new InvalidParams("--control: " + err.getMessage());
            }
            ControlServer.refuseLive(Path.of(control));
        }
        Daemon daemon = new Daemon(log);
        if (control != null) {
            daemon.controlSocket(Path.of(control));
        }
        Export e;
        try {
            e = daemon.add(spec);
        } catch (RpcError err) {
            if (Main.failure(err)) {
                throw err; // locked elsewhere, refused, unreachable: status 1, not a bad argument's 2
            }
            throw new InvalidParams(err.getMessage());
        }
        MetricsEndpoint endpoint = null;
        ControlServer server = null;
        try {
            endpoint = address == null ? null : MetricsEndpoint.start(address, daemon);
            if (control != null) {
                try {
                    server = new ControlServer(Path.of(control), SocketFile.DEFAULT_MODE, null, spec.allowUids,
                            new JsonRpc(daemon, log), log, daemon.controlThreads());
                } catch (IllegalArgumentException err) {
                    throw new InvalidParams("--control: " + err.getMessage());
                } catch (UncheckedIOException err) {
                    throw Export.listenFailure("--control: cannot listen on " + control, err);
                }
            }
        } catch (RuntimeException err) {
            daemon.close();
            if (endpoint != null) {
                endpoint.close();
            }
            throw err;
        }
        ctx.out().println("vblk: serving " + e.describe() + " on " + e.socketPath()
                + (server != null ? "; control socket " + server.path() : ""));
        ctx.out().flush();
        // Under systemd's Type=notify: started once the export listens (STOPPING=1 at shutdown).
        SystemdNotify systemd = SystemdNotify.fromEnvironment(log);
        daemon.systemd(systemd);
        daemon.readyNotice("READY=1\nSTATUS=serving " + spec.id + " on " + e.socketPath());
        return Lifecycle.runUntilShutdown(daemon, log, ctx.signals(), server, endpoint);
    }
}
