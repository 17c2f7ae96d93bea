package io.vblk.daemon;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import io.vblk.engine.BlockDevice;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;
import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * The storage daemon: any number of exports, changed at run time through the methods of its
 * control plane ({@link #call}). {@code vblk serve} is a daemon with one export and no control
 * socket. Methods that change the set of exports are serialized; readers ({@code export.list},
 * {@code export.stats}) never wait for them and never touch the data plane beyond reading its
 * counters.
 */
final class Daemon implements AutoCloseable {
    /** A control-plane method: checked parameters in, a JSON-ready result out. */
    @FunctionalInterface
    interface Method {
        Object call(Params params);
    }

    private final Log log;
    private final Map<String, Export> exports = new ConcurrentHashMap<>();
    /** Ids in the order they were added, for listings. */
    private final List<String> order = Collections.synchronizedList(new ArrayList<>());
    private final Map<String, Method> methods = new LinkedHashMap<>();
    private final CountDownLatch stopped = new CountDownLatch(1);
    private final Object changes = new Object();
    private volatile boolean shuttingDown;

    Daemon(Log log) {
        this.log = log;
        methods.put("export.add", this::exportAdd);
        methods.put("export.remove", this::exportRemove);
        methods.put("export.list", p -> exportList(p));
        methods.put("export.stats", p -> {
            p.rejectUnknown(Set.of("id", "reset_latency"));
            return Stats.of(export(p), p.bool("reset_latency"));
        });
        methods.put("export.resize", this::exportResize);
        methods.put("export.set_limits", this::exportSetLimits);
        methods.put("iothread.add", this::iothreadAdd);
        methods.put("iothread.list", this::iothreadList);
        methods.put("iothread.remove", this::iothreadRemove);
        methods.put("methods.list", p -> {
            p.rejectUnknown(Set.of());
            return List.copyOf(methods.keySet());
        });
        methods.put("daemon.version", p -> {
            p.rejectUnknown(Set.of());
            return Map.of("version", Version.VBLK, "java", Runtime.version().toString());
        });
        methods.put("daemon.shutdown", p -> {
            p.rejectUnknown(Set.of());
            requestShutdown();
            return Map.of("shutting_down", true);
        });
    }

    /**
     * Runs {@code method} with {@code params}.
     *
     * @throws RpcError with a code and a message for the caller
     */
    Object call(String method, Params params) {
        Method m = methods.get(method);
        if (m == null) {
            throw new RpcError(RpcError.METHOD_NOT_FOUND, "unknown method '" + method + "' (methods.list lists them)");
        }
        try {
            return m.call(params);
        } catch (InvalidParams e) {
            throw new RpcError(RpcError.INVALID_PARAMS, e.getMessage());
        }
    }

    /** The method names, in the order {@code methods.list} gives them. */
    Set<String> methodNames() {
        return Collections.unmodifiableSet(methods.keySet());
    }

    // ------------------------------------------------------------ exports

    /** Adds an export from already-parsed parameters (the configuration file and vblk serve). */
    Export add(ExportSpec spec) {
        synchronized (changes) {
            if (shuttingDown) {
                throw new RpcError(RpcError.SHUTTING_DOWN, "the daemon is shutting down");
            }
            if (exports.containsKey(spec.id)) {
                throw new RpcError(RpcError.ALREADY_EXISTS, "export '" + spec.id + "' already exists");
            }
            Path socket = spec.socket.toAbsolutePath().normalize();
            for (Export e : exports.values()) {
                if (e.socketPath().toAbsolutePath().normalize().equals(socket)) {
                    throw new RpcError(RpcError.ALREADY_EXISTS, "socket " + spec.socket + " is already used by export '" + e.spec.id + "'");
                }
            }
            if (listening(spec.socket)) {
                throw new RpcError(RpcError.IN_USE, "socket " + spec.socket + " is in use: another process listens on it");
            }
            if (!spec.iothreads.isEmpty()) {
                throw new RpcError(RpcError.NOT_SUPPORTED, "iothreads: I/O threads shared between exports are not available "
                        + "in this build; leave iothreads out and the export gets threads of its own");
            }
            Export export = Export.open(spec, log);
            exports.put(spec.id, export);
            order.add(spec.id);
            log.info("export " + spec.id + ": serving " + export.describe() + " on " + export.socketPath());
            return export;
        }
    }

    /** Whether something accepts connections at {@code path} (a live socket, not a stale one). */
    private static boolean listening(Path path) {
        if (!SocketFile.isSocket(path)) {
            return false;
        }
        try {
            UnixSocket.connect(path).close();
            return true;
        } catch (NativeException | IllegalArgumentException e) {
            return false;
        }
    }

    private Object exportAdd(Params p) {
        Export export = add(ExportSpec.parse(p, null));
        return summary(export);
    }

    private static Map<String, Object> summary(Export e) {
        Map<String, Object> m = e.spec.toParams();
        m.put("size_bytes", e.device().config().capacitySectors() * 512);
        m.put("backend", e.backend().cliName());
        return m;
    }

    private Object exportRemove(Params p) {
        p.rejectUnknown(Set.of("id"));
        String id = p.requiredString("id");
        synchronized (changes) {
            Export e = exports.get(id);
            if (e == null) {
                throw notFound(id);
            }
            remove(e);
            return Map.of("id", id, "removed", true);
        }
    }

    private void remove(Export e) {
        // Drain and close first, unlisting after: a stats reader may still see it while it goes.
        e.close();
        exports.remove(e.spec.id);
        order.remove(e.spec.id);
        log.info("export " + e.spec.id + ": removed");
    }

    private Object exportList(Params p) {
        p.rejectUnknown(Set.of());
        List<Object> out = new ArrayList<>();
        for (String id : snapshotOrder()) {
            Export e = exports.get(id);
            if (e != null) {
                out.add(summary(e));
            }
        }
        return out;
    }

    private List<String> snapshotOrder() {
        synchronized (order) {
            return new ArrayList<>(order);
        }
    }

    /** The exports, in the order they were added. */
    List<Export> exports() {
        List<Export> out = new ArrayList<>();
        for (String id : snapshotOrder()) {
            Export e = exports.get(id);
            if (e != null) {
                out.add(e);
            }
        }
        return out;
    }

    private Export export(Params p) {
        String id = p.requiredString("id");
        Export e = exports.get(id);
        if (e == null) {
            throw notFound(id);
        }
        return e;
    }

    private static RpcError notFound(String id) {
        return new RpcError(RpcError.NOT_FOUND, "no export '" + id + "' (export.list lists them)");
    }

    private Object exportResize(Params p) {
        p.rejectUnknown(Set.of("id", "size", "allow_shrink"));
        export(p);
        throw new RpcError(RpcError.NOT_SUPPORTED, "export.resize: online resize is not available in this build");
    }

    private Object exportSetLimits(Params p) {
        p.rejectUnknown(Set.of("id", "iops_limit", "bps_limit"));
        Export e = export(p);
        long iops = p.integer("iops_limit", 0, Long.MAX_VALUE, e.spec.iopsLimit);
        long bps = p.size("bps_limit", 0, e.spec.bpsLimit);
        synchronized (changes) {
            e.setLimits(iops, bps);
        }
        return Map.of("id", e.spec.id, "iops_limit", iops, "bps_limit", bps);
    }

    // ------------------------------------------------------------ I/O threads

    private Object iothreadAdd(Params p) {
        throw new RpcError(RpcError.NOT_SUPPORTED, "iothread.add: I/O threads shared between exports are not available "
                + "in this build; every export has I/O threads of its own (iothread.list shows them)");
    }

    private Object iothreadRemove(Params p) {
        p.rejectUnknown(Set.of("id"));
        throw new RpcError(RpcError.NOT_FOUND, "no I/O thread '" + p.requiredString("id")
                + "' (this build has only each export's own threads, which go with the export)");
    }

    private Object iothreadList(Params p) {
        p.rejectUnknown(Set.of());
        List<Object> out = new ArrayList<>();
        for (Export e : exports()) {
            BlockDevice d = e.device();
            int threads = d.tuning().threadCount(d.numQueues());
            for (int t = 0; t < threads; t++) {
                List<Integer> queues = new ArrayList<>();
                for (int q = 0; q < d.numQueues(); q++) {
                    if (d.tuning().threadOf(q) == t) {
                        queues.add(q);
                    }
                }
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("id", "vblk-" + e.spec.id + "-io" + t);
                m.put("exports", List.of(Map.of("id", e.spec.id, "queues", queues)));
                m.put("wait", d.tuning().waitStrategy().cliName());
                out.add(m);
            }
        }
        return out;
    }

    // ------------------------------------------------------------ lifecycle

    /** Asks the daemon to stop; {@link #awaitShutdownRequest} returns. Any thread. */
    void requestShutdown() {
        shuttingDown = true;
        stopped.countDown();
    }

    boolean shuttingDown() {
        return shuttingDown;
    }

    /** Waits until {@code daemon.shutdown} or {@link #requestShutdown()}. */
    void awaitShutdownRequest() throws InterruptedException {
        stopped.await();
    }

    /** Waits up to {@code timeout} for a shutdown request; true if one came. */
    boolean awaitShutdownRequest(long timeout, TimeUnit unit) throws InterruptedException {
        return stopped.await(timeout, unit);
    }

    /** Drains and removes every export, newest first. */
    @Override
    public void close() {
        synchronized (changes) {
            shuttingDown = true;
            stopped.countDown();
            List<String> ids = snapshotOrder();
            Collections.reverse(ids);
            for (String id : ids) {
                Export e = exports.get(id);
                if (e != null) {
                    remove(e);
                }
            }
        }
    }
}
