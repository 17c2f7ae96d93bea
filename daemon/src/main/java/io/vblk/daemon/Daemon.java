package io.vblk.daemon;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import io.vblk.aio.Image;
import io.vblk.engine.BlockDevice;
import io.vblk.engine.SharedIoThread;
import io.vblk.engine.Tuning;
import io.vblk.engine.WaitStrategy;
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
    /** The daemon's control socket (absolute, normalized), or null: no export may listen there. */
    private volatile Path controlSocket;
    private final Map<String, Export> exports = new ConcurrentHashMap<>();
    /** Ids in the order they were added, for listings. */
    private final List<String> order = Collections.synchronizedList(new ArrayList<>());
    private final Map<String, Method> methods = new LinkedHashMap<>();
    private final Map<String, SharedIoThread> iothreads = new ConcurrentHashMap<>();
    private final List<String> iothreadOrder = Collections.synchronizedList(new ArrayList<>());
    /** Each I/O thread's iothread.add parameters, in effect (for config.save). */
    private final Map<String, Map<String, Object>> iothreadParams = new ConcurrentHashMap<>();
    private final CountDownLatch stopped = new CountDownLatch(1);
    private final Object changes = new Object();
    /** Exports being opened outside the lock: their ids and sockets are taken (guarded by {@link #changes}). */
    private final Map<String, ExportSpec> opening = new LinkedHashMap<>();
    /**
     * Exports unlisted by export.remove whose drain and close run outside {@link #changes} (a
     * network back end whose server stalls may hold a drain for as long as it stalls): their id,
     * socket and I/O threads stay reserved until the close ends. Guarded by {@code changes}.
     */
    private final Map<String, Export> removing = new LinkedHashMap<>();
    /**
     * Exports whose resize runs outside the change lock (it waits for the disk, its server, a
     * drain): no second resize, no removal until it ends; a shutdown waits for it. Under {@code changes}.
     */
    private final Set<String> resizing = new java.util.HashSet<>();
    /** Exports closed with their image's locks kept (an undrained close, {@link Export#locksKept()}), for metrics. */
    private final java.util.concurrent.atomic.AtomicLong locksKept = new java.util.concurrent.atomic.AtomicLong();
    /**
     * The files of every export listed, being opened or being removed, by id (guarded by
     * {@code changes}): its image and every backing file of its qcow2 chain (read-only uses). A
     * file is used by two exports only when both uses are read-only (irev4 and irev5
     * ImageSharingAttackTest). While an export opens, its entry holds the image as its path
     * named it then (a quick refusal before opening); once open, the files as opened.
     */
    private final Map<String, List<ImageUse>> images = new LinkedHashMap<>();

    /**
     * A file identified as the kernel does (not by name): its device and inode. A block device is
     * keyed by the device it is ({@code st_rdev}, inode -1), whatever node names it.
     */
    record FileId(long dev, long ino) {
    }

    /**
     * One file an export uses, whether it only reads it, and whether it is a migration's
     * destination ({@code incoming}, locked): such a use may share the file with a writer, since
     * the image locks hand it over (only one of them holds the writer's locks at a time).
     */
    private record ImageUse(FileId file, boolean readOnly, boolean handOver) {
        ImageUse(FileId file, boolean readOnly) {
            this(file, readOnly, false);
        }
    }

    /**
     * Test hook (ImageSharingRaceTest): runs after the quick check by name and before the image
     * is opened, where a rename may swap the path. Does nothing in the daemon.
     */
    volatile Runnable beforeOpen = () -> { };
    /**
     * Test hook (RemoveAttachRaceTest): runs in export.remove between its look for an attached
     * frontend and the stop that refuses new ones. Does nothing in the daemon.
     */
    volatile Runnable afterAttachedCheck = () -> { };
    private volatile boolean shuttingDown;
    private volatile SystemdNotify systemd = new SystemdNotify(null, null);
    private volatile String readyNotice;
    private final ControlThreads control;
    /** config.save's and --persist's file writes. */
    private final ConfigFile configFile;
    /**
     * The configuration when the shutdown began closing the exports (under {@code changes}), or
     * null: the exports a shutdown closes stay in the persisted file, so a restart brings them back.
     */
    private Map<String, Object> closedConfiguration;
    /**
     * {@code --persist}: entries of the file that failed at start (an image gone, a server not up
     * yet), by id, kept as the file holds them and at their place ({@link #order},
     * {@link #iothreadOrder}), so the file never loses them. An {@code export.add} (an
     * {@code iothread.add}) of the id that succeeds, or a remove of the id, clears one; so does
     * {@code config.retry}. Changed under {@code changes} (with the orders); read by config.status
     * and the metrics without it (a shutdown holds it while it drains).
     */
    private final Map<String, Failure> failedExports = Collections.synchronizedMap(new LinkedHashMap<>());
    private final Map<String, Failure> failedIothreads = Collections.synchronizedMap(new LinkedHashMap<>());

    /**
     * An entry of the persisted file that could not be applied: its parameters as the file holds
     * them, and why; for an export, the entry as parsed (null when it does not parse): its socket
     * and image stay reserved while it is kept (rev13c), since a restart opens it first.
     */
    private record Failure(Map<String, Object> params, String error, ExportSpec spec) {
        static Failure of(boolean export, Map<String, Object> params, String error, long schedSliceUs) {
            ExportSpec spec = null;
            if (export) {
                try {
                    spec = ExportSpec.parse(Params.json(params), null, schedSliceUs);
                } catch (RuntimeException e) {
                    // a broken entry reserves nothing: it can never open
                }
            }
            return new Failure(params, error, spec);
        }
    }
    /**
     * The scheduler slice of an export or I/O thread whose parameters set none
     * ({@code vblk daemon --sched-slice-us}); the entries saved write the slice in effect, so a
     * restart under another default serves them as they were.
     */
    private volatile long schedSliceUs = Tuning.defaults().schedSliceNs() / 1000;

    /** Sets the default slice ({@code vblk daemon --sched-slice-us}), before any entry is added. */
    void defaultSchedSliceUs(long us) {
        schedSliceUs = us;
    }

    /** export.add parameters as this daemon takes them (its default slice). */
    ExportSpec parseExport(Params p) {
        return ExportSpec.parse(p, null, schedSliceUs);
    }

    /**
     * An add of {@code id} that failed while {@code id} is kept as a failed entry: the entry's
     * error becomes this one (config.status shows why it fails now, not why it failed at start).
     */
    private static void keepErrorCurrent(Map<String, Failure> failed, String id, RuntimeException e) {
        String error = e instanceof InvalidParams || e instanceof RpcError ? e.getMessage() : e.toString();
        failed.computeIfPresent(id, (k, old) -> new Failure(old.params(), error, old.spec()));
    }

    /** Methods after which the persisted configuration is brought up to date. */
    private static final Set<String> CHANGES = Set.of("export.add", "export.remove", "export.resize", "export.set_limits",
            "iothread.add", "iothread.remove", "config.retry");

    /**
     * Calls answered at once while the daemon opens the exports of its configuration file; every
     * other waits until the start is over (as if the socket had come up then, so a client that
     * calls once the socket exists sees what it always saw), and no change races the start or the
     * first write of the persisted file.
     */
    private static final Set<String> WHILE_STARTING = Set.of("config.status", "methods.list", "daemon.version");
    /** Exports of the configuration file to open at start, and how many have been tried; -1 once ready. */
    private final java.util.concurrent.atomic.AtomicLong startProgress = new java.util.concurrent.atomic.AtomicLong(-1);
    /** Open once the start is over (or failed): what calls wait on. */
    private final CountDownLatch started = new CountDownLatch(1);

    /** The control socket listens before the start opens {@code total} exports: calls wait for {@link #ready()}. */
    void starting(int total) {
        startProgress.set((long) total << 32);
    }

    /** {@code tried} exports of the configuration file have been tried (opened or kept as failed). */
    void startedThrough(int tried) {
        startProgress.updateAndGet(p -> p < 0 ? p : (p & ~0xffffffffL) | tried);
    }

    /** The start is over (or failed, before the daemon closes): every call is answered. */
    void ready() {
        List<Runnable> resume;
        synchronized (deferred) {
            startProgress.set(-1);
            started.countDown();
            resume = new ArrayList<>(deferred);
            deferred.clear();
        }
        for (Runnable r : resume) {
            try {
                r.run();
            } catch (RuntimeException e) {
                log.info("control: cannot resume a call that waited for the start: " + e);
            }
        }
    }

    /**
     * Calls that wait for the start without holding a thread: what resumes each (its client's
     * next turn). Guarded by itself; emptied by {@link #ready()}.
     */
    private final List<Runnable> deferred = new ArrayList<>();

    /**
     * Whether a control-socket call of {@code method} must wait for the start (see
     * {@link #awaitStartFor}); when it must, {@code resume} runs once the start is over (on the
     * thread that ends it) and the caller gives its thread back meanwhile, so calls that wait
     * never take the threads the reporting calls (config.status) need. False when the call may
     * run now.
     */
    boolean deferUntilStarted(String method, Runnable resume) {
        if (startProgress.get() < 0 || WHILE_STARTING.contains(method)) {
            return false;
        }
        synchronized (deferred) {
            if (startProgress.get() < 0) {
                return false;
            }
            deferred.add(resume);
            return true;
        }
    }

    /**
     * Holds a control-socket call of {@code method} until the start is over, unless it only
     * reports ({@code config.status}, {@code methods.list}, {@code daemon.version}); the start's
     * own calls do not pass here.
     */
    void awaitStartFor(String method) {
        if (startProgress.get() < 0 || WHILE_STARTING.contains(method)) {
            return;
        }
        try {
            started.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RpcError(RpcError.STARTING, "the daemon is starting; " + method + " was interrupted while it waited");
        }
    }

    /** Whether the start is over (a daemon that never called {@link #starting} is ready). */
    boolean isReady() {
        return startProgress.get() < 0;
    }

    Daemon(Log log) {
        this.log = log;
        this.control = new ControlThreads(log);
        this.configFile = new ConfigFile(log);
        methods.put("export.add", this::exportAdd);
        methods.put("export.remove", this::exportRemove);
        methods.put("export.list", p -> exportList(p));
        methods.put("export.stats", p -> {
            p.rejectUnknown(Set.of("id", "reset_latency"));
            return Stats.of(export(p), p.bool("reset_latency"));
        });
        methods.put("export.resize", this::exportResize);
        methods.put("export.set_limits", this::exportSetLimits);
        methods.put("export.rebind", p -> {
            p.rejectUnknown(Set.of("id"));
            Export e = export(p);
            return Map.of("id", e.spec.id, "rebound", e.rebind());
        });
        methods.put("iothread.add", this::iothreadAdd);
        methods.put("iothread.list", this::iothreadList);
        methods.put("iothread.remove", this::iothreadRemove);
        methods.put("config.save", this::configSave);
        methods.put("config.status", p -> {
            p.rejectUnknown(Set.of());
            Map<String, Object> m = configFile.status();
            long progress = startProgress.get();
            m.put("state", progress < 0 ? "ready" : "starting");
            if (progress >= 0) {
                m.put("start_exports_tried", progress & 0xffffffffL);
                m.put("start_exports_total", progress >>> 32);
            }
            m.put("failed_iothreads", failures(failedIothreads));
            m.put("failed_exports", failures(failedExports));
            return m;
        });
        methods.put("config.retry", this::configRetry);
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
        Object result;
        try {
            result = m.call(params);
        } catch (InvalidParams e) {
            throw new RpcError(RpcError.INVALID_PARAMS, e.getMessage());
        } catch (RuntimeException e) {
            if (CHANGES.contains(method)) {
                persist(); // one that failed part way (a remove whose close threw) may have changed the state: the file follows
            }
            throw e;
        }
        if (CHANGES.contains(method)) {
            String failed = persist();
            if (failed != null && result instanceof Map<?, ?> answer) {
                // The change stands; the caller learns it is not saved (and config.status, the metrics, the log).
                Map<String, Object> m2 = new LinkedHashMap<>();
                answer.forEach((k, v) -> m2.put(String.valueOf(k), v));
                m2.put("persist_error", failed);
                result = m2;
            }
        }
        return result;
    }

    // ------------------------------------------------------------ configuration

    /**
     * The configuration that makes the daemon again as it is now, in the {@code --config} form:
     * the I/O threads (first: exports name them), then the exports, each in the order added.
     * Exports still opening or being removed are not in it; after a shutdown began, the
     * configuration it closed.
     */
    Map<String, Object> configuration() {
        synchronized (changes) {
            if (closedConfiguration != null) {
                return closedConfiguration;
            }
            List<Map<String, Object>> threads = new ArrayList<>();
            List<String> ids;
            synchronized (iothreadOrder) {
                ids = new ArrayList<>(iothreadOrder);
            }
            for (String id : ids) {
                Map<String, Object> p = iothreadParams.get(id);
                Failure f = failedIothreads.get(id);
                if (p != null) {
                    threads.add(p);
                } else if (f != null) {
                    threads.add(f.params()); // as the file holds it: a restart tries it again
                }
            }
            List<Map<String, Object>> exportList = new ArrayList<>();
            for (String id : snapshotOrder()) {
                Export e = exports.get(id);
                Failure f = failedExports.get(id);
                if (e != null) {
                    exportList.add(e.spec.toConfig());
                } else if (f != null) {
                    exportList.add(f.params());
                }
            }
            return ConfigFile.document(threads, exportList);
        }
    }

    /**
     * Bytes one export's entry may still grow by after its add, through calls never refused for
     * size: export.resize (a null disk's size) and export.set_limits (iops_limit, bps_limit),
     * each at most 19 digits where the entry may hold as little as one.
     */
    static final int ENTRY_GROWTH = 64;

    /**
     * {@code --persist}: refuses an add of I/O thread {@code thread} (its entry) or export
     * {@code export} before it takes effect when the persisted file would then not load at a
     * restart under the same command line (rev13b): larger than {@link DaemonCommand.Config#MAX_BYTES}
     * with room for every export's numbers to grow ({@link #ENTRY_GROWTH}), or an export entry
     * that does not parse back as written. Exports still opening count as added. Renders the
     * whole configuration: cheap next to an add at any size the file may have. Under {@code changes}.
     */
    private void checkLoadable(Map<String, Object> thread, ExportSpec export) {
        if (!configFile.persisting()) {
            return;
        }
        Map<String, Object> now = configuration();
        @SuppressWarnings("unchecked")
        List<Map<String, Object>> threads = new ArrayList<>((List<Map<String, Object>>) now.get("iothreads"));
        @SuppressWarnings("unchecked")
        List<Map<String, Object>> exportList = new ArrayList<>((List<Map<String, Object>>) now.get("exports"));
        // An add of a failed entry's id takes its place: the entry is not counted twice.
        if (thread != null) {
            threads.removeIf(t -> thread.get("id").equals(t.get("id")));
            threads.add(thread);
        }
        if (export != null) {
            exportList.removeIf(e -> export.id.equals(e.get("id")));
        }
        for (ExportSpec o : opening.values()) {
            exportList.add(o.toConfig());
        }
        Map<String, Object> entry = export == null ? null : export.toConfig();
        if (entry != null) {
            exportList.add(entry);
        }
        long size = ConfigFile.render(ConfigFile.document(threads, exportList)).length + (long) ENTRY_GROWTH * exportList.size();
        if (size > DaemonCommand.Config.MAX_BYTES) {
            throw new InvalidParams("the persisted configuration would grow to " + size + " bytes (with room for sizes and"
                    + " limits to grow), more than the " + DaemonCommand.Config.MAX_BYTES + " a restart reads: refused, nothing"
                    + " changed (remove an export, or give fewer allow_uids)");
        }
        if (entry != null) {
            try {
                ExportSpec.parse(Params.json(readBack(entry)), null);
            } catch (InvalidParams e) {
                throw new InvalidParams("export '" + export.id + "' would not load at a restart, its saved entry is refused ("
                        + e.getMessage() + "): refused, nothing changed");
            }
        }
        if (thread != null) {
            try {
                parseIoThread(Params.json(readBack(thread)));
            } catch (InvalidParams e) {
                throw new InvalidParams("I/O thread '" + thread.get("id") + "' would not load at a restart, its saved entry is"
                        + " refused (" + e.getMessage() + "): refused, nothing changed");
            }
        }
    }

    /** {@code entry} as a restart reads it: written as the file holds it, and parsed again. */
    @SuppressWarnings("unchecked")
    private static Map<String, Object> readBack(Map<String, Object> entry) {
        try {
            return (Map<String, Object>) JsonRpc.JSON_IN.anyFrom(new String(ConfigFile.render(entry),
                    java.nio.charset.StandardCharsets.UTF_8));
        } catch (java.io.IOException e) {
            throw new IllegalStateException("the configuration does not read back", e); // render writes JSON
        }
    }

    /**
     * {@code vblk daemon --persist}: keeps {@code file} up to date from now on (written at once),
     * holding its {@code lock} ({@link ConfigFile#lock}) until {@link #close}.
     */
    void persistTo(Path file, ConfigFile.PersistLock lock) {
        configFile.persistTo(file, lock, this::configuration);
    }

    /** Brings the persisted file up to date, if any; null, or why it failed. */
    private String persist() {
        return configFile.persist(this::configuration);
    }

    /**
     * {@code vblk daemon --persist} at start: applies iothread (or export, {@code export} true)
     * entry {@code params} of the file; when it fails, keeps it as a failed entry at its place
     * (logged, in config.status, in the file) and answers the error, or null. An entry without a
     * string id, or with an id taken, is a broken file, not a disk that cannot open: thrown.
     */
    String applyOrKeep(boolean export, Map<String, Object> params) {
        Object id = params.get("id");
        String what = export ? "export" : "I/O thread";
        boolean broken;
        synchronized (changes) {
            Map<String, Failure> failed = export ? failedExports : failedIothreads;
            if (id instanceof String s && failed.containsKey(s)) {
                throw new RpcError(RpcError.ALREADY_EXISTS, what + " '" + s + "' already exists (an earlier entry)");
            }
            broken = !(id instanceof String s) || s.isEmpty() || (export ? exports.containsKey(s) : iothreads.containsKey(s));
        }
        if (broken) {
            return applyStrict(export, params); // answered (thrown) as without --persist
        }
        try {
            applyStrict(export, params);
            return null;
        } catch (RuntimeException e) {
            // Any failure of one entry, not only a refusal (rev13c: a NativeException from an
            // io_setup refused for aio-max-nr, an eventfd refused at the descriptor limit) keeps
            // it: thrown on, it would stop the start and every other disk with it. Errors are not.
            String error = e instanceof InvalidParams || e instanceof RpcError ? e.getMessage() : e.toString();
            synchronized (changes) {
                (export ? failedExports : failedIothreads).put((String) id, Failure.of(export, params, error, schedSliceUs));
                (export ? order : iothreadOrder).add((String) id);
            }
            log.info("config: " + what + " " + id + " failed at start, kept in the file: " + error);
            return error;
        }
    }

    private String applyStrict(boolean export, Map<String, Object> params) {
        if (export) {
            add(parseExport(Params.json(params)));
        } else {
            addIoThread(Params.json(params));
        }
        return null;
    }

    /**
     * Lists the exports in the order of {@code ids} (the configuration file's), whatever order
     * their concurrent opens at start ended in ({@link StartOpener}), so listings, the metrics and
     * the persisted file keep the file's order; ids not in it keep their place after those that are.
     */
    void orderExportsAs(List<String> ids) {
        Map<String, Integer> rank = new java.util.HashMap<>();
        for (int i = 0; i < ids.size(); i++) {
            rank.putIfAbsent(ids.get(i), i);
        }
        synchronized (changes) {
            synchronized (order) {
                List<String> sorted = new ArrayList<>(order);
                sorted.sort(java.util.Comparator.comparingInt(id -> rank.getOrDefault(id, Integer.MAX_VALUE)));
                order.clear();
                order.addAll(sorted);
            }
        }
    }

    /** Entries of the file that failed at start and are kept: {@code vblk_config_entries_failed}. */
    int failedEntries() {
        return failedExports.size() + failedIothreads.size();
    }

    private static List<Object> failures(Map<String, Failure> failed) {
        List<Object> out = new ArrayList<>();
        synchronized (failed) {
            failed.forEach((id, f) -> out.add(Map.of("id", id, "error", f.error())));
        }
        return out;
    }

    /**
     * {@code config.retry}: applies every failed entry again (I/O threads first: exports name
     * them), each as its own iothread.add or export.add; one that fails again stays, with its
     * new error.
     */
    private Object configRetry(Params p) {
        p.rejectUnknown(Set.of());
        List<Object> added = new ArrayList<>();
        for (boolean export : new boolean[] {false, true}) {
            Map<String, Failure> failed = export ? failedExports : failedIothreads;
            Map<String, Failure> now;
            synchronized (failed) {
                now = new LinkedHashMap<>(failed);
            }
            for (Map.Entry<String, Failure> f : now.entrySet()) {
                try {
                    applyStrict(export, f.getValue().params());
                    added.add(f.getKey());
                } catch (RuntimeException e) {
                    String error = e instanceof InvalidParams || e instanceof RpcError ? e.getMessage() : e.toString();
                    failed.computeIfPresent(f.getKey(), (id, old) -> new Failure(old.params(), error, old.spec()));
                }
            }
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("added", added);
        m.put("failed_iothreads", failures(failedIothreads));
        m.put("failed_exports", failures(failedExports));
        return m;
    }

    /** config.save's file writes and their status (metrics). */
    ConfigFile configFile() {
        return configFile;
    }

    private Object configSave(Params p) {
        p.rejectUnknown(Set.of("path", "overwrite"));
        String path = p.string("path", null);
        boolean overwrite = p.bool("overwrite");
        if (path == null) {
            return configuration();
        }
        Path target = ConfigFile.target(path);
        Map<String, FileId> failedFiles = failedImageFiles();
        return configFile.saveTo(target, overwrite, (dir, name, existing) -> refuseExportFile(target,
                existing == null ? null : new FileId(existing.dev(), existing.ino()), failedFiles), this::configuration);
    }

    /**
     * config.save: refuses a target that an export uses (rev13b): its image or a backing file
     * of it ({@code file}: the target as its directory holds it when written, the same file by
     * device and inode whatever the name; null when there is none), or its socket (by path; a
     * socket is no regular file either). The rename would put JSON in place of a disk.
     */
    private void refuseExportFile(Path target, FileId file, Map<String, FileId> failedFiles) {
        Path socket = target.toAbsolutePath().normalize();
        synchronized (changes) {
            if (file != null) {
                for (Map.Entry<String, List<ImageUse>> e : images.entrySet()) {
                    for (ImageUse use : e.getValue()) {
                        if (use.file().equals(file)) {
                            throw new InvalidParams("path " + target + " is a file export '" + e.getKey()
                                    + "' uses (its image or a backing file): refused");
                        }
                    }
                }
            }
            List<String> ids = new ArrayList<>();
            for (Export e : exports.values()) {
                if (sameSocket(e.socketPath().toAbsolutePath().normalize(), socket)) {
                    ids.add(e.spec.id);
                }
            }
            for (Export e : removing.values()) {
                if (sameSocket(e.socketPath().toAbsolutePath().normalize(), socket)) {
                    ids.add(e.spec.id);
                }
            }
            for (ExportSpec o : opening.values()) {
                if (sameSocket(o.socket.toAbsolutePath().normalize(), socket)) {
                    ids.add(o.id);
                }
            }
            if (!ids.isEmpty()) {
                throw new InvalidParams("path " + target + " is the socket of export '" + ids.get(0) + "': refused");
            }
            // A failed entry's image is the disk a restart opens (rev13c): its file, or its path while it is gone.
            String failed = failedNaming(null, null, file == null ? List.of() : List.of(new ImageUse(file, false)), false,
                    socket, failedFiles);
            if (failed != null) {
                throw new InvalidParams("path " + target + " is the image of export '" + failed + "' (failed at start, kept in"
                        + " the configuration): refused");
            }
        }
    }

    /**
     * The files the images of the export entries kept as failed at start name now, by id (a
     * gone image has none). Stat'ed outside {@code changes}: a path on a hung NFS server stalls
     * only the call that asks, not every change. Failed entries are only ever dropped after the
     * start, so one missing here is no longer kept.
     */
    private Map<String, FileId> failedImageFiles() {
        List<Map.Entry<String, Failure>> now;
        synchronized (failedExports) {
            if (failedExports.isEmpty()) {
                return Map.of();
            }
            now = new ArrayList<>(failedExports.entrySet());
        }
        Map<String, FileId> out = new java.util.HashMap<>();
        for (Map.Entry<String, Failure> f : now) {
            ExportSpec o = f.getValue().spec();
            if (o != null && o.image != null) {
                beforeFailedImageStat.run();
                FileId id = fileId(o.image.toAbsolutePath().normalize());
                if (id != null) {
                    out.put(f.getKey(), id);
                }
            }
        }
        return out;
    }

    /**
     * Names the daemon's control socket ({@code --control}), before any export is added: an
     * export on that path is refused as a bad argument (its listen, or the control socket's,
     * would find the other listening and blame "another process").
     */
    void controlSocket(Path path) {
        controlSocket = path.toAbsolutePath().normalize();
    }

    /** Test hook (ChecksOnOpenedFilesTest): runs before each stat of a failed entry's image. Does nothing in the daemon. */
    volatile Runnable beforeFailedImageStat = () -> { };

    /**
     * The ids of the export entries kept as failed at start whose socket is {@code socket}
     * (absolute, normalized): the same name, or the same name in the same directory reached by
     * another path ({@link #sameSocket} stats both directories). Outside {@code changes}, as
     * {@link #failedImageFiles}: a failed entry's directory on a hung NFS or FUSE mount (perhaps
     * why it failed) stalls only the add that asks, not every change.
     */
    private Set<String> failedOnSocket(Path socket) {
        List<Map.Entry<String, Failure>> now;
        synchronized (failedExports) {
            if (failedExports.isEmpty()) {
                return Set.of();
            }
            now = new ArrayList<>(failedExports.entrySet());
        }
        Set<String> out = new java.util.HashSet<>();
        for (Map.Entry<String, Failure> f : now) {
            ExportSpec o = f.getValue().spec();
            if (o != null) {
                beforeFailedSocketStat.run();
                if (sameSocket(o.socket.toAbsolutePath().normalize(), socket)) {
                    out.add(f.getKey());
                }
            }
        }
        return out;
    }

    /** Test hook (ChecksOnOpenedFilesTest): runs before each comparison with a failed entry's socket. Does nothing in the daemon. */
    volatile Runnable beforeFailedSocketStat = () -> { };

    /**
     * The id of the first export entry kept as failed at start, other than {@code id}, whose
     * socket is the one asked about ({@code onSocket}: {@link #failedOnSocket}, taken before;
     * null: none asked) or whose image is one of the files of
     * {@code uses} ({@code files}: {@link #failedImageFiles}, taken before) or the path
     * {@code image} (absolute, normalized; may be null), unless both uses are read-only; or
     * null. A kept entry opens first at the next restart, so its socket and image are as taken
     * as a served export's (rev13c). Under {@code changes}.
     */
    private String failedNaming(String id, Set<String> onSocket, List<ImageUse> uses, boolean readOnly, Path image,
            Map<String, FileId> files) {
        synchronized (failedExports) {
            for (Map.Entry<String, Failure> f : failedExports.entrySet()) {
                ExportSpec o = f.getValue().spec();
                if (o == null || f.getKey().equals(id)) {
                    continue; // an add of the same id replaces the entry
                }
                if (onSocket != null && onSocket.contains(f.getKey())) {
                    return f.getKey(); // (stat'ed before the lock: no stat here)
                }
                if (o.image == null) {
                    continue;
                }
                if (image != null && !(readOnly && o.readOnly) && o.image.toAbsolutePath().normalize().equals(image)) {
                    return f.getKey();
                }
                FileId theirs = files.get(f.getKey());
                for (ImageUse use : uses) {
                    if (theirs != null && theirs.equals(use.file()) && !(use.readOnly() && o.readOnly)) {
                        return f.getKey();
                    }
                }
            }
        }
        return null;
    }

    /** Where the daemon logs (the metrics endpoint logs there too). */
    Log log() {
        return log;
    }

    /** The threads that serve every export's socket and every control client. */
    ControlThreads controlThreads() {
        return control;
    }

    /** The method names, in the order {@code methods.list} gives them. */
    Set<String> methodNames() {
        return Collections.unmodifiableSet(methods.keySet());
    }

    // ------------------------------------------------------------ exports

    /** Adds an I/O thread from {@code iothread.add} parameters (the configuration file). */
    void addIoThread(Params p) {
        try {
            iothreadAdd(p, true); // persisted, if at all, by the change that reads the file (config.retry)
        } catch (InvalidParams e) {
            throw new RpcError(RpcError.INVALID_PARAMS, e.getMessage());
        }
    }

    /**
     * Adds an export from already-parsed parameters (the configuration file and vblk serve).
     *
     * <p>The export is opened outside the lock that serializes changes: opening a network disk
     * connects and negotiates (up to the connect timeout per connection, seconds for a server
     * that stalls), and one slow server must not hold every other export change, listing or the
     * shutdown. Its id and socket are reserved under the lock first (a second add of either is
     * refused at once), and installed under it after; when the daemon began shutting down
     * meanwhile, the just-opened export is closed and the add fails.
     */
    Export add(ExportSpec spec) {
        Path socket = spec.socket.toAbsolutePath().normalize();
        FileId imageFile = imageFile(spec);
        Map<String, FileId> failedFiles = failedImageFiles(); // outside the lock: a stat may hang
        Set<String> failedOnSocket = failedOnSocket(socket); // so may a stat of their sockets' directories
        Path controlPath = controlSocket;
        if (controlPath != null && sameSocket(controlPath, socket)) {
            throw new InvalidParams("socket " + spec.socket + " is the daemon's control socket (--control): give the export"
                    + " another socket");
        }
        SharedIoThread[] threads;
        // Probed before the lock (and never waiting: a listener that accepts nobody must hold no
        // other change), answered in the checks' order: a socket of this daemon's is named as such.
        // An add the checks below refuse by this daemon's own ids and sockets is not probed: a
        // connect to its own live export would log a frontend connecting and leaving there.
        boolean own;
        synchronized (changes) {
            own = exports.containsKey(spec.id) || opening.containsKey(spec.id) || removing.containsKey(spec.id)
                    || servingOn(exports.values(), socket) != null || servingOn(removing.values(), socket) != null;
        }
        boolean live = !own && listening(spec.socket);
        synchronized (changes) {
            if (shuttingDown) {
                throw new RpcError(RpcError.SHUTTING_DOWN, "the daemon is shutting down");
            }
            if (exports.containsKey(spec.id) || opening.containsKey(spec.id)) {
                throw new RpcError(RpcError.ALREADY_EXISTS, "export '" + spec.id + "' already exists");
            }
            if (removing.containsKey(spec.id)) {
                throw new RpcError(RpcError.ALREADY_EXISTS, "export '" + spec.id + "' is being removed (its drain has not ended)");
            }
            Export user = servingOn(removing.values(), socket);
            if (user != null) {
                throw new RpcError(RpcError.ALREADY_EXISTS, "socket " + spec.socket + " is still used by export '"
                        + user.spec.id + "' (being removed)");
            }
            user = servingOn(exports.values(), socket);
            if (user != null) {
                throw new RpcError(RpcError.ALREADY_EXISTS, "socket " + spec.socket + " is already used by export '" + user.spec.id + "'");
            }
            for (ExportSpec o : opening.values()) {
                if (sameSocket(o.socket.toAbsolutePath().normalize(), socket)) {
                    throw new RpcError(RpcError.ALREADY_EXISTS, "socket " + spec.socket + " is already used by export '" + o.id
                            + "' (being added)");
                }
            }
            String failed = failedNaming(spec.id, failedOnSocket, List.of(), false, null, failedFiles);
            if (failed != null) {
                throw new RpcError(RpcError.ALREADY_EXISTS, "socket " + spec.socket + " is the socket of export '" + failed
                        + "', which failed at start and is kept in the configuration (a restart opens it first): export.remove"
                        + " it, or export.add it again, before giving its socket to another export");
            }
            failed = spec.image == null ? null : failedNaming(spec.id, null, imageFile == null ? List.of()
                    : List.of(new ImageUse(imageFile, spec.readOnly)), spec.readOnly, spec.image.toAbsolutePath().normalize(),
                    failedFiles);
            if (failed != null) {
                throw failedImage(spec, failed);
            }
            if (live) {
                throw new RpcError(RpcError.IN_USE, "socket " + spec.socket + " is in use: another process listens on it");
            }
            threads = new SharedIoThread[spec.iothreads.size()];
            for (int i = 0; i < threads.length; i++) {
                threads[i] = iothreads.get(spec.iothreads.get(i));
                Failure thread = failedIothreads.get(spec.iothreads.get(i));
                if (threads[i] == null && thread != null) {
                    throw new RpcError(RpcError.NOT_FOUND, "iothreads: I/O thread '" + spec.iothreads.get(i) + "' failed at start ("
                            + thread.error() + "): add it again with iothread.add (or config.retry), then this export");
                }
                if (threads[i] == null) {
                    throw new RpcError(RpcError.NOT_FOUND, "iothreads: no I/O thread '" + spec.iothreads.get(i)
                            + "' (iothread.add creates one)");
                }
            }
            List<ImageUse> named = imageFile == null ? List.of() : List.of(new ImageUse(imageFile, spec.readOnly, handOver(spec)));
            checkShared(spec, named);
            checkLoadable(null, spec);
            images.put(spec.id, named);
            opening.put(spec.id, spec);
        }
        Export export = null;
        boolean installed = false;
        try {
            beforeOpen.run();
            try {
                export = Export.open(spec, log, threads, control);
            } catch (RuntimeException e) {
                refuseSharedInProcess(spec, e);
                throw e;
            }
            // The files as opened (a path renamed since the check above, a backing chain).
            List<ImageUse> opened = uses(export, spec.readOnly, handOver(spec));
            synchronized (changes) {
                checkShared(spec, opened); // on a refusal the finally below closes the export
                // The files as opened against the failed entries' too (a path renamed since the check by name).
                String failed = failedNaming(spec.id, null, opened, spec.readOnly, null, failedFiles);
                if (failed != null) {
                    throw failedImage(spec, failed);
                }
                images.put(spec.id, opened);
                if (!shuttingDown) {
                    exports.put(spec.id, export);
                    if (failedExports.remove(spec.id) == null) {
                        order.add(spec.id);
                    } else {
                        log.info("export " + spec.id + ": failed at start, now added");  // at its place in the file
                    }
                    installed = true;
                    log.info("export " + spec.id + ": serving " + export.describe() + " on " + export.socketPath());
                }
            }
        } finally {
            synchronized (changes) {
                opening.remove(spec.id);
                if (!installed) {
                    images.remove(spec.id);
                }
            }
            if (export != null && !installed) {
                export.close(); // refused (a file shared), or the daemon began shutting down while it opened
                counted(export);
            }
        }
        if (!installed) {
            throw new RpcError(RpcError.SHUTTING_DOWN, "the daemon is shutting down");
        }
        return export;
    }

    private static RpcError failedImage(ExportSpec spec, String failed) {
        return new RpcError(RpcError.IN_USE, "image " + spec.imageName() + " is the image of export '" + failed
                + "', which failed at start and is kept in the configuration (a restart opens it first): export.remove"
                + " it, or export.add it again, before giving its image to another export");
    }

    /**
     * An image lock refused because another export of this daemon holds the file (a backing file
     * of an overlay, a path renamed since the check by name): answered as the sharing check
     * answers, naming that export.
     */
    private void refuseSharedInProcess(ExportSpec spec, Throwable failure) {
        for (Throwable t = failure; t != null; t = t.getCause()) {
            if (t instanceof io.vblk.sys.ImageLock.LockedException locked && locked.heldByThisProcess() && locked.ino() >= 0) {
                synchronized (changes) {
                    checkShared(spec, List.of(new ImageUse(new FileId(locked.dev(), locked.ino()), locked.reader())));
                }
                return;
            }
        }
    }

    /** Whether {@code spec}'s image is handed over by its locks (a locked migration destination). */
    private static boolean handOver(ExportSpec spec) {
        return spec.incoming && spec.locking != io.vblk.sys.ImageLock.Locking.OFF;
    }

    /**
     * Refuses {@code spec} when one of {@code uses} shares a file with another export's uses and
     * either use writes it (two writers, or a reader beside a writer, corrupt it for both; an
     * overlay reads its backing file, so the base may not be written under it). Under {@code changes}.
     */
    private void checkShared(ExportSpec spec, List<ImageUse> uses) {
        for (Map.Entry<String, List<ImageUse>> other : images.entrySet()) {
            if (other.getKey().equals(spec.id)) {
                continue; // its own reservation while it opened
            }
            for (ImageUse mine : uses) {
                for (ImageUse theirs : other.getValue()) {
                    if (mine.file().equals(theirs.file()) && !(mine.readOnly() && theirs.readOnly())
                            && !mine.handOver() && !theirs.handOver()) {
                        throw new RpcError(RpcError.IN_USE, "image " + spec.imageName() + " (or a backing file of it) is already"
                                + " used by export '" + other.getKey() + "'" + (theirs.readOnly() ? " read-only" : "")
                                + ": one file is exported once unless every use of it is read-only (two writers, or a"
                                + " reader beside a writer, corrupt it for both)");
                    }
                }
            }
        }
    }

    /**
     * The files {@code export} holds open, identified by their descriptors (not their names: a
     * path renamed between the check and the open names another file), each read-only when the
     * export or the file is (backing files are).
     */
    private static List<ImageUse> uses(Export export, boolean readOnly, boolean handOver) {
        List<ImageUse> uses = new ArrayList<>();
        for (Image f : export.files()) {
            int fd = f.fd();
            // /proc/self/fd/N resolves to the open file itself (fstat); a portable image has no
            // descriptor: its path, as opened just now, is the best there is.
            FileId id = fileId(fd >= 0 ? Path.of("/proc/self/fd/" + fd) : f.path());
            if (id != null) {
                uses.add(new ImageUse(id, readOnly || f.readOnly(), handOver));
            }
        }
        return uses;
    }

    /**
     * What identifies {@code spec}'s image file by its name before it is opened (a quick refusal
     * of the usual mistake; the files as opened are checked after): null for a network or null
     * disk, or when the file cannot be examined (its open then says why).
     */
    private static FileId imageFile(ExportSpec spec) {
        return spec.image == null ? null : fileId(spec.image);
    }

    /**
     * The device and inode of the file {@code path} names whatever the name (a symlink, a hard
     * link, {@code ..}), or for a block device the device it names; null when it cannot be examined.
     */
    static FileId fileId(Path path) {
        try {
            Map<String, Object> a = java.nio.file.Files.readAttributes(path, "unix:dev,ino,mode,rdev");
            int mode = (Integer) a.get("mode");
            if ((mode & 0170000) == 0060000) { // S_IFBLK: two nodes may name one device
                return new FileId((Long) a.get("rdev"), -1);
            }
            return new FileId((Long) a.get("dev"), (Long) a.get("ino"));
        } catch (java.io.IOException | RuntimeException e) {
            return null;
        }
    }

    /** The first of {@code among} that serves on {@code socket} (absolute and normalized), or null. */
    private static Export servingOn(Collection<Export> among, Path socket) {
        for (Export e : among) {
            if (sameSocket(e.socketPath().toAbsolutePath().normalize(), socket)) {
                return e;
            }
        }
        return null;
    }

    /**
     * Whether two absolute, normalized socket paths name one socket: the same string, or the
     * same name in the same directory reached by other names (a symlinked directory, a bind
     * mount): the directory's device and inode decide, not its spelling.
     */
    static boolean sameSocket(Path a, Path b) {
        if (a.equals(b)) {
            return true;
        }
        if (a.getFileName() == null || !a.getFileName().equals(b.getFileName()) || a.getParent() == null || b.getParent() == null) {
            return false;
        }
        FileId da = fileId(a.getParent());
        return da != null && da.equals(fileId(b.getParent()));
    }

    /**
     * Whether something accepts connections at {@code path} (a live socket, not a stale one):
     * never waits, even for a listener whose backlog is full ({@link UnixSocket#listening}).
     */
    private static boolean listening(Path path) {
        if (!SocketFile.isSocket(path)) {
            return false;
        }
        try {
            return UnixSocket.listening(path);
        } catch (NativeException | IllegalArgumentException e) {
            return false;
        }
    }

    private Object exportAdd(Params p) {
        ExportSpec spec = parseExport(p);
        if (!failedExports.containsKey(spec.id)) { // a kept entry of an older file is added again by its id
            refuseOptionLikeId(p, spec.id);
        }
        try {
            return summary(add(spec));
        } catch (RuntimeException e) {
            keepErrorCurrent(failedExports, spec.id, e);
            throw e;
        }
    }

    /**
     * A new id begins with a letter or a digit: one such as "--" or "-x" reads as an option on
     * every command line that names it (vblk ctl, vblk stat --id, scripts). Ids of files written
     * before the rule (the configuration, the persisted file) still load.
     */
    private static void refuseOptionLikeId(Params p, String id) {
        if (!id.isEmpty() && !Character.isLetterOrDigit(id.charAt(0))) {
            throw new InvalidParams(p.name("id") + " must begin with a letter or a digit, got '" + id + "'");
        }
    }

    private static Map<String, Object> summary(Export e) {
        Map<String, Object> m = e.spec.toParams();
        m.put("size_bytes", e.device().config().capacitySectors() * 512);
        m.put("backend", e.backend().cliName());
        m.put("frontend", e.frontendInfo()); // null: no VM attached
        m.put("socket_missing", e.checkSocket()); // removed or replaced under it: no frontend can connect
        return m;
    }

    /**
     * Unlists the export under the change lock, then drains and closes it outside the lock: a
     * drain waits for the export's requests in flight, which a stalled network server may hold
     * indefinitely, and every other change (add, remove, resize, I/O threads) and the shutdown
     * must not wait for it. Once unlisted, operations on the export answer "no export" (resize
     * and limits look it up again under the lock), and its id, socket and I/O threads stay
     * reserved ({@link #removing}) until the close ends. The call itself answers after the drain.
     */
    private Object exportRemove(Params p) {
        p.rejectUnknown(Set.of("id", "force"));
        String id = p.requiredString("id");
        boolean force = p.bool("force");
        Export e;
        boolean attached;
        synchronized (changes) {
            e = exports.get(id);
            // Not while an export.add of the id opens it (the failure is cleared once that ends).
            if (e == null && !opening.containsKey(id) && failedExports.remove(id) != null) {
                order.remove(id);
                log.info("export " + id + ": failed at start, removed from the configuration");
                return Map.of("id", id, "removed", true, "failed", true);
            }
            if (e == null) {
                throw removing.containsKey(id)
                        ? new RpcError(RpcError.NOT_FOUND, "export '" + id + "' is already being removed")
                        : notFound(id);
            }
            if (resizing.contains(id)) {
                throw new RpcError(RpcError.IN_USE, "export '" + id + "' is being resized: remove it once the resize has ended");
            }
            // As QEMU's block-export-del: a running VM's disk is not pulled from under it (its
            // frontend would see the connection drop mid-I/O) unless asked to. The shutdown and
            // the configuration's own paths close exports through remove(Export), never here.
            io.vblk.vhost.VhostUserServer.Frontend f = e.frontend();
            afterAttachedCheck.run();
            if (f == null && !force && !e.stopUnlessAttached()) {
                f = e.frontend(); // one came after the look above: refused as if it had been there
            }
            if (f != null && !force) {
                throw new RpcError(RpcError.IN_USE, "export '" + id + "' has a frontend connected (" + (f.pid() >= 0
                        ? "pid " + f.pid() : "pid unknown") + "): detach it first (QEMU: device_del), or pass force (ctl"
                        + " export.remove --id " + id + " --force) to disconnect it");
            }
            attached = f != null;
            exports.remove(id);
            order.remove(id);
            removing.put(id, e);
        }
        try {
            e.close();
        } finally {
            synchronized (changes) {
                removing.remove(id);
                images.remove(id); // its file is free once its close ended
                changes.notifyAll(); // a shutdown may wait for this close
            }
        }
        log.info("export " + id + ": removed" + (attached ? " (its frontend disconnected: forced)" : ""));
        Map<String, Object> answer = new LinkedHashMap<>();
        answer.put("id", id);
        answer.put("removed", true);
        if (counted(e)) {
            answer.put("locks_kept", true);
        }
        if (attached) {
            answer.put("frontend_disconnected", true);
        }
        return answer;
    }

    /** The shutdown's close of {@code e}: it stays in the persisted configuration ("stopped", not "removed"). */
    private void remove(Export e) {
        // Drain and close first, unlisting after: a stats reader may still see it while it goes.
        e.close();
        counted(e);
        exports.remove(e.spec.id);
        order.remove(e.spec.id);
        images.remove(e.spec.id);
        log.info("export " + e.spec.id + ": stopped");
    }

    private Object exportList(Params p) {
        p.rejectUnknown(Set.of());
        List<Object> out = new ArrayList<>();
        for (Export e : exports()) {
            out.add(summary(e));
        }
        return out;
    }

    private List<String> snapshotOrder() {
        synchronized (order) {
            return new ArrayList<>(order);
        }
    }

    /** The shared I/O threads by id, sorted (a copy, for the metrics). */
    Map<String, SharedIoThread> sharedIoThreads() {
        return new java.util.TreeMap<>(iothreads);
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

    private RpcError notFound(String id) {
        Failure f = failedExports.get(id);
        if (f != null) {
            return new RpcError(RpcError.NOT_FOUND, "export '" + id + "' failed at start (" + f.error() + "): not served;"
                    + " export.add it again, or export.remove it");
        }
        return new RpcError(RpcError.NOT_FOUND, "no export '" + id + "' (export.list lists them)");
    }

    private Object exportResize(Params p) {
        p.rejectUnknown(Set.of("id", "size", "allow_shrink"));
        export(p); // names the missing export before any parameter error
        if (!p.has("size")) {
            throw new InvalidParams("size is required");
        }
        long size = p.size("size", 512, 0);
        boolean allowShrink = p.bool("allow_shrink");
        Export e;
        synchronized (changes) {
            // Looked up again under the lock: an export removed since the look-up above has a
            // closed image whose descriptor number another export's image may hold by now, and a
            // resize through it would cut that disk (irev3 RemovedExportAttackTest). Marked
            // resizing, it cannot be removed (nor closed by a shutdown) until the resize ends.
            e = export(p);
            if (!resizing.add(e.spec.id)) {
                throw new RpcError(RpcError.IN_USE, "export '" + e.spec.id + "' is already being resized");
            }
        }
        // Outside the lock: a resize waits for its disk or server (a qcow2 header written
        // durably to a stalled NBD server), and no other export's change may wait with it.
        try {
            return e.resize(size, allowShrink);
        } finally {
            synchronized (changes) {
                resizing.remove(e.spec.id);
                changes.notifyAll(); // a shutdown may wait for this resize
            }
        }
    }

    private Object exportSetLimits(Params p) {
        p.rejectUnknown(Set.of("id", "iops_limit", "bps_limit"));
        synchronized (changes) {
            // Under the lock, look-up included: never the limits of an export removed meanwhile.
            Export e = export(p);
            long iops = p.integer("iops_limit", 0, Long.MAX_VALUE, e.spec.iopsLimit);
            long bps = p.size("bps_limit", 0, e.spec.bpsLimit);
            e.setLimits(iops, bps);
            return Map.of("id", e.spec.id, "iops_limit", iops, "bps_limit", bps);
        }
    }

    // ------------------------------------------------------------ I/O threads

    /** iothread.add parameters, checked; {@code config}: the entry saved for them. */
    private record IoThreadSpec(String id, int[] cpus, WaitStrategy waitStrategy, long pollNs, long sliceUs, Map<String, Object> config) {
    }

    /** Checks iothread.add parameters (no thread made): what iothread.add and its saved entry's parse-back run. */
    /** Checks iothread.add parameters {@code p} as this daemon takes them, adding nothing; the thread's id. */
    String checkIoThread(Params p) {
        return parseIoThread(p).id();
    }

    private IoThreadSpec parseIoThread(Params p) {
        p.rejectUnknown(Set.of("id", "cpus", "wait", "poll_ns", "sched_slice_us"));
        String id = p.requiredString("id");
        if (!id.matches("[A-Za-z0-9_.-]{1,32}")) {
            throw new InvalidParams("id must be 1 to 32 letters, digits, '.', '_' or '-', got '" + id + "'");
        }
        long[] cpuList = p.integers("cpus", 0, 1023, 1024); // bounded: the list is written to the configuration file
        int[] cpus = cpuList == null ? new int[0] : java.util.Arrays.stream(cpuList).mapToInt(c -> (int) c).toArray();
        WaitStrategy wait = WaitStrategy.ADAPTIVE;
        String waitName = p.string("wait", null);
        if (waitName != null) {
            try {
                wait = WaitStrategy.parse(waitName);
            } catch (IllegalArgumentException e) {
                throw new InvalidParams("wait: " + e.getMessage());
            }
        }
        long pollNs = p.integer("poll_ns", 0, 1_000_000_000L, Tuning.defaults().pollNs());
        long sliceUs = ExportSpec.schedSliceUs(p, "sched_slice_us", schedSliceUs);
        return new IoThreadSpec(id, cpus, wait, pollNs, sliceUs, iothreadConfig(p, id, cpus, wait, pollNs, sliceUs));
    }

    private Object iothreadAdd(Params p) {
        return iothreadAdd(p, false);
    }

    private Object iothreadAdd(Params p, boolean fileEntry) {
        IoThreadSpec spec = parseIoThread(p);
        if (!fileEntry && !failedIothreads.containsKey(spec.id())) {
            refuseOptionLikeId(p, spec.id());
        }
        try {
            return iothreadAdd(spec);
        } catch (RuntimeException e) {
            keepErrorCurrent(failedIothreads, spec.id(), e);
            throw e;
        }
    }

    private Object iothreadAdd(IoThreadSpec spec) {
        String id = spec.id();
        synchronized (changes) {
            if (shuttingDown) {
                throw new RpcError(RpcError.SHUTTING_DOWN, "the daemon is shutting down");
            }
            if (iothreads.containsKey(id)) {
                throw new RpcError(RpcError.ALREADY_EXISTS, "I/O thread '" + id + "' already exists");
            }
            Map<String, Object> config = spec.config();
            checkLoadable(config, null);
            SharedIoThread t;
            try {
                t = new SharedIoThread("vblk-iot-" + id, spec.waitStrategy(), spec.pollNs(), spec.cpus(), spec.sliceUs() * 1000);
            } catch (IllegalArgumentException e) {
                throw new InvalidParams("cpus: " + e.getMessage());
            }
            iothreads.put(id, t);
            if (failedIothreads.remove(id) == null) {
                iothreadOrder.add(id);
            }
            iothreadParams.put(id, config);
            log.info("I/O thread " + id + " started (wait " + spec.waitStrategy().cliName() + (spec.cpus().length > 0 ? ", cpus "
                    + java.util.Arrays.toString(spec.cpus()) : "") + ")");
            return describe(id, t);
        }
    }

    private Object iothreadRemove(Params p) {
        p.rejectUnknown(Set.of("id"));
        String id = p.requiredString("id");
        synchronized (changes) {
            SharedIoThread t = iothreads.get(id);
            if (t == null && failedIothreads.remove(id) != null) {
                iothreadOrder.remove(id);
                threadRemoved(id);
                return Map.of("id", id, "removed", true, "failed", true);
            }
            if (t == null) {
                throw new RpcError(RpcError.NOT_FOUND, "no I/O thread '" + id + "' (iothread.list lists them)");
            }
            List<String> users = new ArrayList<>(exports().stream().filter(e -> e.spec.iothreads.contains(id)).map(e -> e.spec.id).toList());
            opening.values().stream().filter(o -> o.iothreads.contains(id)).forEach(o -> users.add(o.id));
            removing.values().stream().filter(e -> e.spec.iothreads.contains(id)).forEach(e -> users.add(e.spec.id + " (being removed)"));
            if (!users.isEmpty()) {
                throw new RpcError(RpcError.IN_USE, "I/O thread '" + id + "' serves export(s) " + users + ": remove them first");
            }
            t.close();
            iothreads.remove(id);
            iothreadOrder.remove(id);
            iothreadParams.remove(id);
            threadRemoved(id);
            return Map.of("id", id, "removed", true);
        }
    }

    /**
     * I/O thread {@code id} is gone: the failed export entries that name it would now fail on
     * it first (an add checks its threads before it opens anything), so their errors say so
     * rather than why they failed at start (a thread that failed then, an image gone). Under
     * {@code changes}.
     */
    private void threadRemoved(String id) {
        synchronized (failedExports) {
            failedExports.replaceAll((k, f) -> f.spec() == null || !f.spec().iothreads.contains(id) ? f
                    : new Failure(f.params(), "iothreads: no I/O thread '" + id + "' (removed by iothread.remove since):"
                            + " iothread.add it again, then export.add this export (or config.retry)", f.spec()));
        }
    }

    /**
     * An I/O thread's iothread.add parameters in effect: as given, with the known ones written
     * out (the slice too: the daemon's default may differ at a restart).
     */
    private static Map<String, Object> iothreadConfig(Params p, String id, int[] cpus, WaitStrategy wait, long pollNs,
            long sliceUs) {
        Map<String, Object> m = new LinkedHashMap<>(p.values());
        m.put("id", id);
        m.put("cpus", java.util.Arrays.stream(cpus).boxed().toList());
        m.put("wait", wait.cliName());
        m.put("poll_ns", pollNs);
        m.put("sched_slice_us", sliceUs);
        return m;
    }

    private Map<String, Object> describe(String id, SharedIoThread t) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("shared", true);
        m.put("cpus", java.util.Arrays.stream(t.cpus()).boxed().toList());
        m.put("wait", t.waitStrategy().cliName());
        m.put("sched_slice_us", t.schedSliceNs() / 1000);
        m.put("busy_fraction", Math.round(t.busyFraction() * 1000) / 1000.0);
        List<Object> users = new ArrayList<>();
        for (Export e : exports()) {
            int n = Math.min(e.spec.iothreads.size(), e.spec.queues);
            List<Integer> queues = new ArrayList<>();
            for (int q = 0; q < e.spec.queues; q++) {
                if (n > 0 && e.spec.iothreads.get(q % n).equals(id)) {
                    queues.add(q);
                }
            }
            if (!queues.isEmpty()) {
                users.add(Map.of("id", e.spec.id, "queues", queues));
            }
        }
        m.put("exports", users);
        return m;
    }

    private Object iothreadList(Params p) {
        p.rejectUnknown(Set.of());
        List<Object> out = new ArrayList<>();
        List<String> ids;
        synchronized (iothreadOrder) {
            ids = new ArrayList<>(iothreadOrder);
        }
        for (String id : ids) {
            SharedIoThread t = iothreads.get(id);
            if (t != null) {
                out.add(describe(id, t));
            }
        }
        // Exports without shared threads have threads of their own, listed for completeness.
        for (Export e : exports()) {
            if (!e.spec.iothreads.isEmpty()) {
                continue;
            }
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
                m.put("shared", false);
                m.put("wait", d.tuning().waitStrategy().cliName());
                m.put("exports", List.of(Map.of("id", e.spec.id, "queues", queues)));
                out.add(m);
            }
        }
        return out;
    }

    // ------------------------------------------------------------ lifecycle

    /** The systemd notifier ({@code NOTIFY_SOCKET}); one that sends nothing unless {@code vblk daemon} set one. */
    SystemdNotify systemd() {
        return systemd;
    }

    void systemd(SystemdNotify n) {
        systemd = n;
    }

    /**
     * What to tell systemd once the daemon runs ({@code READY=1} and a status); sent by
     * {@link Lifecycle} after its SIGTERM hook is in place, so a stop that follows the readiness at
     * once still drains (and says STOPPING=1) rather than ending the JVM unhooked.
     */
    void readyNotice(String state) {
        readyNotice = state;
    }

    String readyNotice() {
        return readyNotice;
    }

    /**
     * Looks at every export's socket file (a stat each) and tells, once per export, one that was
     * removed or replaced since it was bound: frontends can no longer connect to it; one still
     * missing at the next check listens again there ({@link Export#checkSocketAndRebind}). Runs
     * every {@link Lifecycle#SOCKET_CHECK_SECONDS}.
     */
    void checkSockets() {
        for (Export e : exports.values()) {
            e.checkSocketAndRebind();
        }
    }

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

    /** Counts an export whose close kept its image's locks; returns whether it did. */
    private boolean counted(Export e) {
        if (e.locksKept()) {
            locksKept.incrementAndGet();
            return true;
        }
        return false;
    }

    /**
     * Exports closed since start whose image's locks were kept because a back end did not close
     * drained (they last until the kernel lets go of the file): {@code vblk_image_locks_kept_total}.
     */
    long locksKeptCount() {
        return locksKept.get();
    }

    /** Drains and removes every export, newest first, then ends the control threads. */
    @Override
    public void close() {
        closeExports();
        persist(); // the configuration as the shutdown found it, if a change's own write had not come yet
        configFile.close(); // the file's lock: another daemon may persist it now
        control.close();
    }

    private void closeExports() {
        synchronized (changes) {
            shuttingDown = true;
            stopped.countDown();
            // A resize runs outside the lock on its export's device: it ends before the device closes.
            boolean interruptedByResize = false;
            while (!resizing.isEmpty()) {
                try {
                    changes.wait();
                } catch (InterruptedException ie) {
                    interruptedByResize = true;
                }
            }
            if (interruptedByResize) {
                Thread.currentThread().interrupt();
            }
            closedConfiguration = configuration();
            List<String> ids = snapshotOrder();
            Collections.reverse(ids);
            // Every frontend's connection ends now, so their rings drain at once rather than one
            // export after the other; each close below then waits only for what is left.
            for (String id : ids) {
                Export e = exports.get(id);
                if (e != null) {
                    e.stop();
                }
            }
            for (String id : ids) {
                Export e = exports.get(id);
                if (e != null) {
                    remove(e);
                }
            }
            // An export.remove still draining outside the lock uses its I/O threads until its
            // close ends: wait for it (stop drains) before the threads close under it.
            boolean interrupted = false;
            while (!removing.isEmpty()) {
                try {
                    changes.wait();
                } catch (InterruptedException ie) {
                    interrupted = true;
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
            for (SharedIoThread t : iothreads.values()) {
                t.close();
            }
            iothreads.clear();
            iothreadOrder.clear();
        }
    }
}
