package io.vblk.daemon;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParentCommand;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * {@code vblk daemon}: one JVM serving any number of exports, changed at run time over a
 * JSON-RPC control socket. It starts with the exports of {@code --config}, or with none.
 */
@Command(name = "daemon", mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = {"Serves any number of exports (an export is one disk on one vhost-user socket) from one JVM, "
            + "changed at run time through a JSON-RPC 2.0 control socket: one request object per line, one response per "
            + "line (vblk ctl talks to it; methods.list lists the methods). SIGINT, SIGTERM (also during the start) or daemon.shutdown drain "
            + "every export and exit with status 0; SIGHUP is ignored.",
            "",
            "The configuration file holds the objects the methods take: {\"iothreads\": [ {iothread.add params}, ... ], "
            + "\"exports\": [ {export.add params}, ... ]}."},
        footer = {"", "Exit status: 0 after a clean shutdown, 2 for a bad argument or configuration, 1 for any other "
            + "failure (an image locked by another process, an NBD server down or not up yet, permission denied, an I/O "
            + "error, a socket or --config file in use by another process)."})
final class DaemonCommand implements Callable<Integer> {
    @ParentCommand
    Main parent;

    @Option(names = "--control", paramLabel = "PATH", required = true, description = "the control socket (created mode 0600)")
    String control;

    @Option(names = "--config", paramLabel = "FILE", description = "JSON configuration: {\"iothreads\": [ iothread.add params ], \"exports\": [ export.add params ]}")
    Path config;

    @Option(names = "--persist", description = "keep the --config file up to date: after every change (export.add, "
            + "export.remove, export.resize, export.set_limits, iothread.add, iothread.remove) it is replaced atomically "
            + "(mode 0600), so a restart with the same command line brings every export and I/O thread back; a missing "
            + "file starts the daemon with none and is created; at start an entry that fails (an image gone, a server "
            + "not up) is kept in the file and reported by config.status, and the daemon serves the others; a second "
            + "daemon persisting the same file is refused (lock file .FILE.lock beside it), and a file changed by hand "
            + "while the daemon runs is not overwritten (config.status reports it)")
    boolean persist;

    @Option(names = "--sched-slice-us", paramLabel = "US", description = "the scheduler slice of every export and I/O "
            + "thread that sets no sched_slice_us (0: the kernel's default; else 100 to 100000); saved entries write the "
            + "slice in effect")
    String schedSliceUs;

    /** Exports and I/O threads of the --persist file that failed at start. */
    private int failedAtStart;
    private int failedThreadsAtStart;

    @Option(names = "--control-mode", paramLabel = "OCTAL", description = "permission bits of the control socket (default 0600)")
    String controlMode;

    @Option(names = "--control-group", paramLabel = "NAME|GID", description = "group of the control socket file")
    String controlGroup;

    @Option(names = {"--allow-uid", "--allow-uids"}, paramLabel = "UID[,UID...]", description = "control clients allowed "
            + "(SO_PEERCRED; default: the daemon's own uid and root)")
    String allowUids;

    @Option(names = "--metrics", paramLabel = "ADDR:PORT", description = "serve Prometheus metrics at http://ADDR:PORT/metrics")
    String metrics;

    @Option(names = "--guest-memory-budget", paramLabel = "SIZE", converter = ByteSizeConverter.class, description = "the "
            + "most guest memory the frontends of all exports may map at once (default: the host's memory, or the memory "
            + "cgroup's limit when smaller); a memory table past it is refused")
    Long guestMemoryBudget;

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
        Map<String, Object> controlParams = new java.util.LinkedHashMap<>();
        if (controlMode != null) {
            controlParams.put("socket_mode", controlMode);
        }
        if (allowUids != null) {
            controlParams.put("allow_uids", allowUids);
        }
        controlParams.put("id", "control");
        controlParams.put("image", "null:512");
        controlParams.put("socket", control);
        // The control socket's mode and uids go through the exports' checks: one set of rules.
        ExportSpec access = ExportSpec.parse(Params.commandLine(controlParams), null);
        Long sliceUs = schedSliceUs == null ? null : ExportSpec.schedSliceUs(Params.commandLine(Map.of("sched_slice_us",
                schedSliceUs)), "sched_slice_us", 0);
        // One daemon persists one file: its lock is taken before the file is read, and held
        // until the daemon closes (the Daemon owns it from persistTo on).
        ConfigFile.PersistLock lock = persist ? ConfigFile.lock(config, log) : null;
        try {
            return serve(ctx, log, access, lock, sliceUs);
        } finally {
            if (lock != null) {
                lock.close(); // the daemon closed it already, or never got it (a refused start)
            }
        }
    }

    private Integer serve(Main.Context ctx, Log log, ExportSpec access, ConfigFile.PersistLock lock, Long sliceUs) {
        Config conf = persist ? ConfigFile.readPersisted(config) : config == null ? new Config(List.of(), List.of()) : Config.read(config);
        if (config != null) {
            conf = conf.resolvedAgainst(config.toAbsolutePath().getParent());
        }
        List<Map<String, Object>> exports = conf.exports();
        MetricsEndpoint.Address address = metrics == null ? null : MetricsEndpoint.Address.parse(metrics);
        try {
            SocketFile.check(access.socket);
        } catch (IllegalArgumentException e) {
            throw new InvalidParams("--control: " + e.getMessage());
        }
        ControlServer.refuseLive(access.socket); // before any export opens: a running daemon keeps its socket
        Daemon daemon = new Daemon(log);
        // Before the control socket and the first export listen: a SIGTERM during a long start
        // stops it (no further entry opens) and drains what is open, with the status of a clean
        // shutdown and no socket file left, rather than ending the JVM under open exports.
        Lifecycle.Signals signals = Lifecycle.Signals.install(daemon, log, ctx.signals());
        final SystemdNotify systemd;
        try {
            daemon.controlSocket(access.socket);
            systemd = SystemdNotify.fromEnvironment(log);
            daemon.systemd(systemd);
            if (sliceUs != null) {
                daemon.defaultSchedSliceUs(sliceUs);
            }
        } catch (RuntimeException | Error e) {
            signals.startFailed(); // the failure's own status, not the hook's wait for a cleanup that never comes
            throw e;
        }
        ControlServer server = null;
        MetricsEndpoint endpoint = null;
        try {
            // Without --persist an entry that fails stops the start (status 2: the operator's
            // file is wrong; 1: its disk is locked elsewhere, unreachable or refused). With it, the file is the daemon's own state
            // after a restart: one disk that cannot open (an image gone, a server not up yet) must
            // not keep every other down, so it is kept as a failed entry (config.status, metrics,
            // the file unchanged) and the start goes on.
            validate(conf, daemon);
            // The control socket and the metrics listen first: with many exports the start takes a
            // while, and an operator sees it under way (config.status "state": "starting", the
            // exports tried so far) while every other call waits until it is over.
            daemon.starting(exports.size());
            try {
                server = new ControlServer(access.socket, access.socketMode, controlGroup, access.allowUids,
                        new JsonRpc(daemon, log), log, daemon.controlThreads());
            } catch (IllegalArgumentException e) {
                throw new InvalidParams("--control: " + e.getMessage());
            } catch (UncheckedIOException e) {
                throw Export.listenFailure("--control: cannot listen on " + control, e);
            }
            endpoint = address == null ? null : MetricsEndpoint.start(address, daemon);
            if (!exports.isEmpty()) {
                ctx.out().println("vblk: daemon control socket up on " + server.path() + (endpoint != null ? ", metrics on "
                        + endpoint.url() : "") + "; opening " + exports.size() + (exports.size() == 1 ? " export" : " exports"));
                ctx.out().flush();
            }
            int failedThreads = 0;
            int failed = 0;
            for (int i = 0; i < conf.iothreads().size(); i++) {
                try {
                    if (persist) {
                        failedThreads += daemon.applyOrKeep(false, conf.iothreads().get(i)) == null ? 0 : 1;
                    } else {
                        daemon.addIoThread(Params.json(conf.iothreads().get(i)));
                    }
                } catch (InvalidParams | RpcError e) {
                    if (Main.failure(e)) {
                        throw new RpcError(((RpcError) e).code, "--config " + config + ": iothreads[" + i + "]: " + e.getMessage(), e);
                    }
                    throw new InvalidParams("--config " + config + ": iothreads[" + i + "]: " + e.getMessage());
                }
            }
            // Opened several at once (StartOpener): each attach to an I/O thread is a round trip to
            // it, and the ones that wait together are applied in one pass.
            failed = StartOpener.run(exports.size(), StartOpener.PARALLEL, i -> !daemon.shuttingDown() && openAtStart(daemon, exports.get(i), i),
                    (tried, failedSoFar) -> {
                        daemon.startedThrough(tried);
                        if (systemd.enabled()) {
                            systemd.send("STATUS=opening exports: " + tried + " of " + exports.size() + " tried, " + failedSoFar
                                    + " failed");
                        }
                    });
            daemon.orderExportsAs(exports.stream().map(e -> e.get("id") instanceof String s ? s : "").toList());
            failedAtStart = failed;
            failedThreadsAtStart = failedThreads;
            // After a signal during the start, entries not tried are in neither list: the file stays as it was.
            if (persist && !daemon.shuttingDown()) {
                logStaleSockets(log, access.socket, exports);
                // Only from here on is every add checked against the file's size (Daemon.checkLoadable
                // renders the whole configuration): the entries loaded above come from a file that
                // loads, so the start renders it once, here, not once per export (O(n^2) for 200).
                daemon.persistTo(config, lock); // before ready(): no change can race the first write
            }
            daemon.ready();
        } catch (RuntimeException | Error e) {
            daemon.ready(); // calls that waited for the start run into the closing daemon
            daemon.close();
            if (endpoint != null) {
                endpoint.close();
            }
            if (server != null) {
                server.close();
            }
            signals.startFailed();
            throw e;
        }
        int serving = exports.size() - failedAtStart;
        // Every export of the file has been tried: a unit of Type=notify is started now (VMs
        // ordered after it find their sockets), failed entries or not (config.status says which).
        daemon.readyNotice("READY=1\nSTATUS=serving " + serving + (serving == 1 ? " export, " : " exports, ")
                + (failedAtStart + failedThreadsAtStart) + " failed");
        // On stdout, where scripts and tests wait for it ("listening"), timestamped as every
        // log line on stderr is: one format for both.
        io.vblk.vhost.Log.to(ctx.out()).info("daemon listening on " + server.path() + " (" + serving
                + (serving == 1 ? " export" : " exports") + (failedAtStart + failedThreadsAtStart > 0 ? ", "
                + (failedAtStart + failedThreadsAtStart) + " failed entries of the configuration (config.status)" : "")
                + (endpoint != null ? ", metrics on " + endpoint.url() : "")
                + ")");
        ctx.out().flush();
        return Lifecycle.runUntilShutdown(daemon, log, signals, server, endpoint);
    }

    /**
     * Logs (one line) the socket files a kill -9 during an add or a remove left beside the
     * persisted exports' sockets ({@link StaleSockets}); they are left in place.
     */
    private static void logStaleSockets(Log log, Path control, List<Map<String, Object>> exports) {
        List<Path> named = new ArrayList<>();
        for (Map<String, Object> e : exports) {
            if (e.get("socket") instanceof String s) {
                try {
                    named.add(Path.of(s));
                } catch (RuntimeException bad) {
                    // a failed entry's unusable path: nothing to look beside
                }
            }
        }
        String line = StaleSockets.report(named, control);
        if (line != null) {
            log.info(line);
        }
    }

    /**
     * Opens export entry {@code i} of the file at start: true when it failed and is kept as a
     * failed entry (--persist); a failure that stops the start is thrown, naming the entry.
     */
    private boolean openAtStart(Daemon daemon, Map<String, Object> entry, int i) {
        try {
            if (persist) {
                return daemon.applyOrKeep(true, entry) != null;
            }
            daemon.add(daemon.parseExport(Params.json(entry)));
            return false;
        } catch (InvalidParams | RpcError e) {
            if (daemon.shuttingDown()) {
                return false; // a shutdown came during the start: not a failure of the entry
            }
            if (Main.failure(e)) {
                throw new RpcError(((RpcError) e).code, "--config " + config + ": exports[" + i + "]: " + e.getMessage(), e);
            }
            throw new InvalidParams("--config " + config + ": exports[" + i + "]: " + e.getMessage());
        }
    }

    /**
     * Checks every entry of the file before the first opens: a wrong file is told at once, not
     * served in part (an export served for a moment, then closed for a later entry's mistake).
     * Ids are unique in each list. Without --persist every entry must also parse, no two exports
     * share a socket, nor an image unless both read it only, and every I/O thread an export names
     * is in the file; with it, an entry that cannot work is kept as a failed entry instead (the
     * file is the daemon's own state), so only what would make the file ambiguous is refused.
     */
    private void validate(Config conf, Daemon daemon) {
        Map<String, Integer> threadIds = new java.util.HashMap<>();
        for (int i = 0; i < conf.iothreads().size(); i++) {
            Map<String, Object> entry = conf.iothreads().get(i);
            String where = "--config " + config + ": iothreads[" + i + "]: ";
            try {
                Object id = persist ? entry.get("id") : daemon.checkIoThread(Params.json(entry));
                Integer earlier = id instanceof String s ? threadIds.putIfAbsent(s, i) : null;
                if (earlier != null) {
                    throw new InvalidParams("I/O thread '" + id + "' already exists (iothreads[" + earlier + "])");
                }
            } catch (InvalidParams e) {
                throw new InvalidParams(where + e.getMessage());
            }
        }
        Map<String, Integer> ids = new java.util.HashMap<>();
        Map<Path, Integer> sockets = new java.util.HashMap<>();
        Map<Path, Integer> images = new java.util.HashMap<>();
        Map<Path, Boolean> imagesReadOnly = new java.util.HashMap<>();
        for (int i = 0; i < conf.exports().size(); i++) {
            Map<String, Object> entry = conf.exports().get(i);
            String where = "--config " + config + ": exports[" + i + "]: ";
            try {
                if (persist) {
                    Integer earlier = entry.get("id") instanceof String s ? ids.putIfAbsent(s, i) : null;
                    if (earlier != null) {
                        throw new InvalidParams("export '" + entry.get("id") + "' already exists (exports[" + earlier + "])");
                    }
                    continue;
                }
                ExportSpec spec = daemon.parseExport(Params.json(entry));
                Integer earlier = ids.putIfAbsent(spec.id, i);
                if (earlier != null) {
                    throw new InvalidParams("export '" + spec.id + "' already exists (exports[" + earlier + "])");
                }
                if (Daemon.sameSocket(spec.socket.toAbsolutePath().normalize(), Path.of(control).toAbsolutePath().normalize())) {
                    throw new InvalidParams("socket " + spec.socket + " is the daemon's control socket (--control): give the"
                            + " export another socket");
                }
                earlier = sockets.putIfAbsent(spec.socket.toAbsolutePath().normalize(), i);
                if (earlier != null) {
                    throw new InvalidParams("socket " + spec.socket + " is the socket of exports[" + earlier + "]");
                }
                if (spec.image != null) {
                    Path image = spec.image.toAbsolutePath().normalize();
                    earlier = images.putIfAbsent(image, i);
                    if (earlier != null && !(spec.readOnly && imagesReadOnly.get(image))) {
                        throw new InvalidParams("image " + spec.image + " is the image of exports[" + earlier + "] (an image is"
                                + " exported once unless every use of it is read-only)");
                    }
                    imagesReadOnly.merge(image, spec.readOnly, Boolean::logicalAnd);
                }
                for (String thread : spec.iothreads) {
                    if (!threadIds.containsKey(thread)) {
                        throw new InvalidParams("iothreads: no I/O thread '" + thread + "' in the file's \"iothreads\"");
                    }
                }
            } catch (InvalidParams e) {
                throw new InvalidParams(where + e.getMessage());
            }
        }
    }

    /** The configuration file: the parameters of iothread.add and export.add calls, applied in that order. */
    record Config(List<Map<String, Object>> iothreads, List<Map<String, Object>> exports) {
        /**
         * The file's relative file names (an export's image, socket, backing_dir,
         * tls_certificates) taken against {@code dir}, the file's directory, as other tools'
         * configuration files do: the same file serves the same disks from any working directory.
         */
        Config resolvedAgainst(Path dir) {
            List<Map<String, Object>> out = new java.util.ArrayList<>();
            for (Map<String, Object> entry : exports) {
                Map<String, Object> m = new java.util.LinkedHashMap<>(entry);
                for (String key : CtlCommand.PATH_KEYS) {
                    if (key.equals("path") || !(m.get(key) instanceof String name) || name.isEmpty()) {
                        continue;
                    }
                    if (key.equals("image") && (name.startsWith(ExportSpec.NULL_PREFIX) || io.vblk.block.NetworkDisk.isAddress(name))) {
                        continue;
                    }
                    try {
                        m.put(key, dir.resolve(name).toString());
                    } catch (java.nio.file.InvalidPathException e) {
                        // not a file name: the entry's parse says what is wrong
                    }
                }
                out.add(m);
            }
            return new Config(iothreads, out);
        }

        /** Far above any real configuration (a few hundred bytes per export); the file is read whole into the heap. */
        static final int MAX_BYTES = 16 << 20;

        /**
         * Reads and checks {@code file}: a regular file (a FIFO would block the start until a
         * writer came, a device such as /dev/zero never ends) of at most {@link #MAX_BYTES}, in
         * UTF-8. Nothing larger is ever read into memory.
         */
        static Config read(Path file) {
            if (!Files.exists(file)) {
                throw new InvalidParams("--config " + file + ": file not found");
            }
            if (!Files.isRegularFile(file)) {
                throw new InvalidParams("--config " + file + ": not a regular file (a directory, FIFO, socket or device is refused)");
            }
            Object doc;
            try (java.io.InputStream in = Files.newInputStream(file)) {
                byte[] bytes = in.readNBytes(MAX_BYTES + 1);
                if (bytes.length > MAX_BYTES) {
                    throw new InvalidParams("--config " + file + ": larger than " + MAX_BYTES + " bytes");
                }
                String text = java.nio.charset.StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(java.nio.charset.CodingErrorAction.REPORT)
                        .decode(java.nio.ByteBuffer.wrap(bytes)).toString();
                doc = JsonRpc.JSON_IN.anyFrom(text);
            } catch (IOException e) {
                throw new InvalidParams("--config " + file + ": not valid JSON: " + JsonRpc.syntaxError(e));
            }
            if (!(doc instanceof Map<?, ?> top)) {
                throw new InvalidParams("--config " + file + ": expected an object {\"iothreads\": [...], \"exports\": [...]}");
            }
            for (Object key : top.keySet()) {
                if (!"exports".equals(key) && !"iothreads".equals(key)) {
                    throw new InvalidParams("--config " + file + ": unknown member \"" + key + "\" (expected \"iothreads\" and \"exports\")");
                }
            }
            return new Config(objects(file, top, "iothreads"), objects(file, top, "exports"));
        }

        @SuppressWarnings("unchecked")
        private static List<Map<String, Object>> objects(Path file, Map<?, ?> top, String key) {
            Object list = top.get(key);
            if (list == null) {
                return List.of();
            }
            if (!(list instanceof List<?> items)) {
                throw new InvalidParams("--config " + file + ": \"" + key + "\" must be a list of parameter objects");
            }
            for (int i = 0; i < items.size(); i++) {
                if (!(items.get(i) instanceof Map<?, ?>)) {
                    throw new InvalidParams("--config " + file + ": " + key + "[" + i + "] must be an object");
                }
            }
            return (List<Map<String, Object>>) list;
        }
    }
}
