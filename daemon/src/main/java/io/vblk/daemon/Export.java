package io.vblk.daemon;

import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.ImageFormat;
import io.vblk.block.NetworkDisk;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.engine.BlkConfig;
import io.vblk.engine.BlockDevice;
import io.vblk.engine.SharedIoThread;
import io.vblk.engine.Tuning;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeException;
import io.vblk.vhost.BackendChoice;
import io.vblk.vhost.FormatChoice;
import io.vblk.vhost.Log;
import io.vblk.vhost.VhostUserServer;

/**
 * One export: an image served as a vhost-user-blk device on its own socket. Opening checks the
 * image (each mistake its own message), builds the device and starts serving on the daemon's
 * {@link ControlThreads} (no thread of its own); {@link #close()} drains in-flight I/O, closes the frontend's connection and the device,
 * removes the socket and closes the image.
 */
final class Export implements AutoCloseable {
    /**
     * Segments per request offered (SEG_MAX): QEMU's default, and within what the back ends
     * preallocate per operation.
     */
    static final int SEG_MAX = 254;

    final ExportSpec spec;
    private final Image image;
    private final BackendChoice backends;
    private final VhostUserServer server;
    /** The drivers opened by the export's driver factory (qcow2, a network disk), for {@link #files()}. */
    private final List<BlockDriver> drivers;
    private final Log log;
    /** Set by a {@link #close()} that left the image's locks to the kernel's last reference. */
    private volatile boolean locksKept;

    private Export(ExportSpec spec, Image image, BackendChoice backends, VhostUserServer server, List<BlockDriver> drivers,
            Log log) {
        this.spec = spec;
        this.image = image;
        this.backends = backends;
        this.server = server;
        this.drivers = drivers;
        this.log = log;
    }

    /**
     * Every local file the export holds open, as opened (its image, every backing file of a
     * qcow2 chain): the daemon identifies them by descriptor to export a file once (irev5).
     * Empty for a network disk without local backing files, and for a null disk.
     */
    List<Image> files() {
        List<Image> all = new ArrayList<>();
        if (image != null) {
            all.add(image);
        }
        synchronized (drivers) {
            for (BlockDriver d : drivers) {
                all.addAll(d.files());
            }
        }
        return all;
    }

    /** A factory that gives {@code opened} every driver {@code f} opens (and syncs as {@code f}). */
    private static DriverFactory recording(DriverFactory f, List<BlockDriver> opened) {
        return new DriverFactory() {
            @Override
            public BlockDriver open(int depth) {
                BlockDriver d = f.open(depth);
                synchronized (opened) {
                    opened.add(d);
                }
                return d;
            }

            @Override
            public void sync() {
                f.sync();
            }
        };
    }

    /**
     * Opens the image, builds the device and starts serving.
     *
     * @throws InvalidParams for anything the caller can fix: a missing or unreadable image, a
     *         bad size, an unusable socket path
     */
    private static final java.util.concurrent.atomic.AtomicBoolean DEFAULT_CAP_WARNED = new java.util.concurrent.atomic.AtomicBoolean();

    /**
     * Said once per process (rev16c F2): an export whose max_guest_memory is left at the default
     * (1 TiB, above any host's memory) is bounded only by the process-wide guest-memory budget,
     * so its frontend, with a sparse memfd that costs it nothing, may take all of it: other
     * frontends are then refused and the daemon's cgroup is charged for what it writes there.
     */
    static void warnDefaultCap(ExportSpec spec, Log log) {
        if (spec.maxGuestMemory == io.vblk.vhost.VhostUserServer.DEFAULT_MAX_GUEST_MEMORY
                && DEFAULT_CAP_WARNED.compareAndSet(false, true)) {
            log.info("export " + spec.id + ": max_guest_memory left at its default: the frontend of such an export may map"
                    + " up to the whole guest-memory budget of this process, " + io.vblk.vhost.VhostUserServer.guestMemoryBudget()
                    + " bytes (the host's memory or its memory cgroup's limit; --guest-memory-budget), and pages the device"
                    + " writes there are charged to the daemon; set max_guest_memory near each guest's RAM (said once)");
        }
    }

    static Export open(ExportSpec spec, Log log, SharedIoThread[] ioThreads, ControlThreads control) {
        return open(spec, log, ioThreads, control, java.util.function.UnaryOperator.identity());
    }

    /**
     * As {@link #open(ExportSpec, Log, SharedIoThread[], ControlThreads)}, every back end the
     * device opens passed through {@code wrap} (tests: one that reports an undrained close).
     */
    static Export open(ExportSpec spec, Log log, SharedIoThread[] ioThreads, ControlThreads control,
            java.util.function.UnaryOperator<io.vblk.aio.IoBackend> wrap) {
        BackendKind kind = spec.aio != null ? spec.aio : BackendKind.IO_URING;
        // Before connecting: nothing to undo.
        if (spec.incoming && spec.network != null && rbdCacheOn(spec.network)) {
            // librbd's cache would keep what this handle read or wrote before the hand-over.
            throw new InvalidParams("incoming: " + spec.network + " turns librbd's cache on (rbd_cache), which would"
                    + " keep data the migration's source overwrites; leave rbd_cache off (the default here)");
        }
        NetworkDisk network = spec.network == null ? null : openNetwork(spec);
        if (network != null) {
            spec.readOnly = network.readOnly();
        }
        FormatChoice format;
        DriverFactory networkFormat = null;
        long networkFormatSize = 0;
        try {
            format = network != null || spec.format == ImageFormat.RAW ? null
                    : FormatChoice.open(spec.image, kind, spec.qcow2Options(), log);
            if (network != null && spec.format == ImageFormat.QCOW2) {
                // A qcow2 image whose bytes lie on the server (qemu-nbd -f raw, rbd import).
                networkFormatSize = Qcow2.virtualSize(network);
                networkFormat = Qcow2.factory(network, spec.qcow2Options());
            }
        } catch (IllegalArgumentException e) {
            throw new InvalidParams(e.getMessage());
        } catch (RuntimeException e) {
            if (network != null) {
                throw e;
            }
            throw openFailure(spec, spec.image, e); // a qcow2 file locked elsewhere, unwritable, unreadable
        }
        // A qcow2 image's drivers open and lock its file (inactive when incoming): no raw image here.
        io.vblk.block.ImageActivation activation = spec.image == null || format != null ? null : openImage(spec, log);
        Image image = activation == null ? null : activation.image();
        List<BlockDriver> drivers = new ArrayList<>();
        try {
            long sizeBytes = networkFormat != null ? networkFormatSize : network != null ? network.sizeBytes() : format != null ? format.sizeBytes()
                    : image == null ? spec.nullSizeBytes : image.sizeBytes();
            BackendChoice backends = new BackendChoice(kind, image, log, wrap);
            BlkConfig config = config(spec, image, sizeBytes, network == null ? 0 : network.blockSizeBytes());
            if (staleSocket(spec.socket)) {
                // Listening replaces it (a live one was refused before): said once, not silently.
                log.info("export " + spec.id + ": replacing the stale socket file " + spec.socket + " (nothing was listening on it)");
            }
            VhostUserServer.Builder builder = VhostUserServer.builder(spec.socket, config, backends)
                    .tuning(tuning(spec)).log(ofExport(spec.id, log)).socketMode(spec.socketMode).name("vblk-" + spec.id)
                    .controlThreads(control.loop(), control.vhostHandlers())
                    .maxGuestMemory(spec.maxGuestMemory);
            warnDefaultCap(spec, log);
            if (activation != null && activation.handsOver()) {
                builder.activation(activation);
            }
            if (format != null) {
                builder.drivers(recording(classifying(spec, format), drivers));
                if (!spec.readOnly) {
                    // qcow2 in a file: its drivers hand the image over (locks, cached metadata,
                    // reserved clusters), an incoming one opened it inactive.
                    builder.driversHandOver(spec.incoming, spec.image.toString());
                }
            }
            if (network != null) {
                builder.drivers(recording(networkFormat != null ? networkFormat : network, drivers));
                if (!spec.readOnly) {
                    // qcow2 on a server: its drivers hand over the cached metadata and the
                    // reserved clusters (no locks there), an incoming one opened it inactive.
                    // A raw network disk has no locks and no cache: its source's hand-over is
                    // a flush (RawDriver.flushAtHandOver), its destination serves as is.
                    builder.driversHandOver(spec.incoming, spec.network, false);
                }
            }
            if (spec.socketGroup != null) {
                builder.socketGroup(spec.socketGroup);
            }
            if (spec.allowUids != null) {
                builder.allowUids(spec.allowUids);
            }
            if (ioThreads != null && ioThreads.length > 0) {
                builder.ioThreads(ioThreads);
            }
            VhostUserServer server = builder.build();
            Export export = new Export(spec, image, backends, server, drivers, log);
            try {
                server.start(); // on the daemon's control threads: no thread of the export's own
                export.bound = socketFileId(spec.socket);
            } catch (RuntimeException e) {
                // Its device and drivers (a qcow2 driver holds its image's locks) go with it, or
                // the next export.add of the image is refused as "held by this process" (review 9b).
                try {
                    server.close();
                } catch (RuntimeException suppressed) {
                    e.addSuppressed(suppressed);
                }
                throw e;
            }
            return export;
        } catch (IllegalArgumentException e) {
            closeQuietly(image);
            throw new InvalidParams(e.getMessage(), e);
        } catch (UncheckedIOException e) {
            closeQuietly(image);
            throw listenFailure("cannot listen on " + spec.socket, e);
        } catch (RuntimeException e) {
            closeQuietly(image);
            throw e;
        }
    }

    /**
     * A qcow2 file's factory whose refusals are told as an image's: its drivers open and lock the
     * image and its backing files when the device starts, so a lock held by another process
     * (an {@link IllegalArgumentException} subclass, which would read as a bad argument) is
     * {@link RpcError#IN_USE}, a refused open or an I/O error {@link RpcError#OPEN_FAILED}
     * (status 1: trying again may pass), as {@link #openFailure} tells a raw image's; any other
     * refusal (a missing backing file, a header that is no qcow2) stays a bad argument.
     */
    private static DriverFactory classifying(ExportSpec spec, DriverFactory f) {
        return new DriverFactory() {
            @Override
            public BlockDriver open(int depth) {
                try {
                    return f.open(depth);
                } catch (io.vblk.sys.ImageLock.LockedException | NativeException | UncheckedIOException e) {
                    throw openFailure(spec, spec.image, e);
                }
            }

            @Override
            public void sync() {
                f.sync();
            }
        };
    }

    /**
     * A socket that could not be listened on ({@code what}: "cannot listen on PATH"): a name that
     * cannot be a socket (its directory gone since the check) is a bad argument (status 2); an
     * address in use is {@link RpcError#IN_USE}; anything else (a directory the daemon may not
     * write, a read-only filesystem, no memory) {@link RpcError#OPEN_FAILED}: status 1, trying
     * again may pass.
     */
    static RuntimeException listenFailure(String what, UncheckedIOException e) {
        String message = what + ": " + e.getCause().getMessage();
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof NativeException n) {
                int errno = n.errno();
                if (errno == Errno.ENOENT || errno == Errno.ENOTDIR || errno == Errno.ELOOP || errno == 36 /* ENAMETOOLONG */) {
                    return new InvalidParams(message, e);
                }
                if (errno == 98 /* EADDRINUSE */) {
                    return new RpcError(RpcError.IN_USE, message, e);
                }
                break;
            }
        }
        return new RpcError(RpcError.OPEN_FAILED, message, e);
    }

    /**
     * {@code log} with every line prefixed "export ID: ": the server's lines (frontend N
     * connected, queue 0 started, resized) number frontends per export, and among many exports
     * only the id tells whose they are (rev15c).
     */
    static Log ofExport(String id, Log log) {
        String prefix = "export " + id + ": ";
        return Log.to(line -> log.info(prefix + line));
    }

    /** Whether an RBD address sets {@code rbd_cache} to something other than false (Ceph's booleans). */
    static boolean rbdCacheOn(String address) {
        if (!address.startsWith("rbd:")) {
            return false;
        }
        try {
            String v = io.vblk.block.rbd.RbdAddress.parse(address).options().get("rbd_cache");
            return v != null && !java.util.Set.of("false", "0", "no", "off").contains(v.toLowerCase(java.util.Locale.ROOT));
        } catch (IllegalArgumentException e) {
            return false; // refused with its reason when it is opened
        }
    }

    /** Whether {@code path} is a socket file, which listening replaces when nothing listens on it (else refused). */
    static boolean staleSocket(Path path) {
        try {
            if (!Files.readAttributes(path, java.nio.file.attribute.BasicFileAttributes.class,
                    java.nio.file.LinkOption.NOFOLLOW_LINKS).isOther()) {
                return false;
            }
            io.vblk.vhost.SocketFile.refuseLive(path); // a live one is refused by the listen, not replaced
            return true;
        } catch (java.io.IOException | RuntimeException e) {
            return false;
        }
    }

    /** Connects to a network disk; a bad address or an unreachable server is one line, as a missing file is. */
    private static NetworkDisk openNetwork(ExportSpec s) {
        try {
            io.vblk.block.nbd.NbdTls tls = null;
            if (s.tlsCertificates != null || s.tlsHostname != null) {
                // The URI's own credentials directory, unless the parameter names one.
                tls = s.tlsCertificates != null ? io.vblk.block.nbd.NbdTls.certificates(s.tlsCertificates)
                        : io.vblk.block.nbd.NbdAddress.parse(s.network).tlsCredentials(null);
                if (s.tlsHostname != null) {
                    tls = tls.withHostname(s.tlsHostname);
                }
            }
            return NetworkDisk.open(s.network, s.readOnly, s.nbdConnections, s.timeouts, tls, s.nbdStrictFlushInEffect());
        } catch (IllegalArgumentException e) {
            throw new InvalidParams("cannot open " + s.network + ": " + addressOnce(s.network, e.getMessage()));
        } catch (RuntimeException e) {
            // The server is down, refuses or is not up yet: not the caller's typo (status 1, not 2).
            throw new RpcError(RpcError.OPEN_FAILED, "cannot open " + s.network + ": " + addressOnce(s.network, e.getMessage()), e);
        }
    }

    /** {@code message} without the address again ("NBD nbd://h/e: connect to nbd://h/e: ..."): the caller names it once. */
    static String addressOnce(String address, String message) {
        String m = String.valueOf(message);
        List<String> names = new ArrayList<>(List.of(address));
        try {
            names.add(io.vblk.block.nbd.NbdAddress.parse(address).toString()); // as the NBD client spells it
        } catch (RuntimeException e) {
            // not an NBD address
        }
        for (String name : names) {
            m = m.replace("NBD " + name + ": ", "").replace("connect to " + name, "connect");
        }
        return m;
    }

    /**
     * An image that could not be opened: a lock held by another process is {@link RpcError#IN_USE},
     * a refusal or I/O error {@link RpcError#OPEN_FAILED} (status 1: trying again, or another
     * option, may succeed), a file name or option that cannot work {@link InvalidParams} (status 2).
     */
    static RuntimeException openFailure(ExportSpec s, Path path, RuntimeException e) {
        String what = "cannot open image " + path + ": ";
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof io.vblk.sys.ImageLock.LockedException) {
                return new RpcError(RpcError.IN_USE, what + e.getMessage(), e);
            }
        }
        if (e instanceof IllegalArgumentException) {
            return new InvalidParams(what + e.getMessage(), e);
        }
        NativeException ne = null;
        for (Throwable t = e; t != null && ne == null; t = t.getCause()) {
            ne = t instanceof NativeException n ? n : null;
        }
        if (ne != null) {
            int errno = ne.errno();
            if (errno == Errno.EINVAL && s.direct) {
                return new InvalidParams(what + e.getMessage() + "; the filesystem may refuse O_DIRECT, try cache writeback", e);
            }
            if (errno == Errno.EINVAL || errno == Errno.ENOENT || errno == Errno.ENOTDIR || errno == Errno.ENODEV
                    || errno == Errno.ESPIPE || errno == Errno.ELOOP || errno == 6 /* ENXIO */ || errno == 21 /* EISDIR */) {
                return new InvalidParams(what + e.getMessage(), e); // a name that is no disk image: a bad argument
            }
            if ((errno == Errno.EACCES || errno == Errno.EROFS || errno == Errno.EPERM) && !s.readOnly && !Files.isWritable(path)) {
                // (A writable image refused: a backing file's open, which --read-only does not change.)
                return new RpcError(RpcError.OPEN_FAILED, what + e.getMessage() + ": " + path + " is not writable by uid "
                        + io.vblk.sys.Native.libc().getuid() + ": pass --read-only (read_only: true) to serve it read-only", e);
            }
        }
        return new RpcError(RpcError.OPEN_FAILED, what + e.getMessage(), e);
    }

    /** Opens the image after checking what it is, so each mistake gets its own message. */
    private static io.vblk.block.ImageActivation openImage(ExportSpec s, Log log) {
        Path path = s.image;
        if (!Files.exists(path)) {
            throw new InvalidParams("image not found: " + path);
        }
        if (Files.isDirectory(path)) {
            throw new InvalidParams("image is a directory: " + path);
        }
        Image image = null;
        io.vblk.block.ImageActivation activation;
        try {
            // Locked at once: nothing reads or writes the image before QEMU's lock check; an
            // incoming export holds the inactive set until its device starts.
            image = Image.open(path, ImageOptions.defaults().readOnly(s.readOnly).direct(s.direct).bounceBudgetBytes(s.bounceBudget));
            activation = io.vblk.block.ImageActivation.lock(image, s.locking, s.incoming, log::info);
        } catch (RuntimeException e) {
            closeQuietly(image);
            throw openFailure(s, path, e);
        }
        FormatChoice.warnIfLooksLikeQcow2(path, log);
        long size = image.sizeBytes();
        if (size == 0 || size % 512 != 0) {
            image.close();
            throw new InvalidParams("image " + path + " is " + size + " bytes, " + (size == 0 ? "empty" : "not a multiple of 512"));
        }
        return activation;
    }

    private static BlkConfig config(ExportSpec s, Image image, long sizeBytes, int networkBlockSize) {
        BlkConfig.Builder b = BlkConfig.builder(sizeBytes).numQueues(s.queues).queueSize(s.queueSize).segMax(SEG_MAX)
                .readOnly(s.readOnly).serial(s.serial);
        if (image != null && sizeBytes % image.logicalBlockSize() == 0) {
            // O_DIRECT's alignment: a guest that respects the block size never needs a bounce.
            b.blockSize(image.logicalBlockSize());
        }
        if (networkBlockSize > 512 && networkBlockSize <= 4096 && sizeBytes % networkBlockSize == 0) {
            b.blockSize(networkBlockSize); // the NBD server's minimum block size
        }
        return b.build();
    }

    private static Tuning tuning(ExportSpec s) {
        return Tuning.builder().waitStrategy(s.wait).pollMaxNs(s.pollMaxUs * 1000).schedSliceNs(s.schedSliceUs * 1000).iopsLimit(s.iopsLimit).bytesPerSecondLimit(s.bpsLimit)
                .backendDepth(s.backendDepth).fixedBuffers(s.fixedBuffers).adjustableLimits(true).build();
    }

    /** The device served, for counters and latency. */
    BlockDevice device() {
        return server.device();
    }

    /** The frontend served now, or null (see {@link VhostUserServer#frontend()}). */
    VhostUserServer.Frontend frontend() {
        return server.frontend();
    }

    /**
     * The frontend served now as {@code export.list} and {@code export.stats} show it: pid, uid
     * (when the kernel told), connected since (ISO-8601, UTC), queues started; null when none is
     * connected.
     */
    Map<String, Object> frontendInfo() {
        VhostUserServer.Frontend f = server.frontend();
        if (f == null) {
            return null;
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("pid", f.pid() < 0 ? null : f.pid());
        m.put("uid", f.uid() < 0 ? null : f.uid());
        m.put("connected_since", java.time.Instant.ofEpochMilli(f.connectedAtMs()).toString());
        m.put("queues_started", f.queuesStarted());
        return m;
    }

    Path socketPath() {
        return server.socketPath();
    }

    /** The socket file as bound (device, inode), or null when it could not be read then. */
    private volatile List<Object> bound;
    private final java.util.concurrent.atomic.AtomicBoolean socketMissing = new java.util.concurrent.atomic.AtomicBoolean();

    /** The device and inode of the file at {@code path} (not followed), or null when there is none. */
    static List<Object> socketFileId(Path path) {
        try {
            Map<String, Object> a = java.nio.file.Files.readAttributes(path, "unix:dev,ino", java.nio.file.LinkOption.NOFOLLOW_LINKS);
            return List.of(a.get("dev"), a.get("ino"));
        } catch (java.io.IOException | UnsupportedOperationException | SecurityException e) {
            return null;
        }
    }

    /**
     * Whether the socket file this export listens on was removed or replaced (its directory
     * too) since it was bound: the export still listens, but no frontend can reach it by name.
     * Looks now (a stat); the first time it is found so, says so in the log, once.
     */
    boolean checkSocket() {
        List<Object> b = bound;
        if (b == null) {
            return false;
        }
        boolean missing = !b.equals(socketFileId(spec.socket));
        if (missing && socketMissing.compareAndSet(false, true)) {
            log.info("export " + spec.id + ": socket " + spec.socket + " removed or replaced; frontends cannot connect to it"
                    + " (export.rebind listens there again, as the daemon does itself at its next check; a frontend attached"
                    + " now is served on)");
        } else if (!missing) {
            socketMissing.set(false); // put back (a rename back): the next loss is told again
        }
        return missing;
    }

    /**
     * Listens again at the export's socket path when its file was removed or replaced
     * ({@link VhostUserServer#rebind()}): a frontend attached now is served on, new ones connect
     * to the new socket. Returns false (nothing done) when the file in place is the one bound.
     *
     * @throws RpcError when it cannot listen there: another process listens on the path (IN_USE),
     *         or the path is unusable, its directory gone or a file that is no socket in its place
     *         (OPEN_FAILED)
     */
    boolean rebind() {
        synchronized (rebinding) {
            if (!checkSocket()) {
                return false;
            }
            try {
                server.rebind();
            } catch (IllegalArgumentException e) {
                // Another server's live socket in its place (never taken over), or a path unusable now.
                boolean live;
                try {
                    io.vblk.vhost.SocketFile.refuseLive(spec.socket);
                    live = false;
                } catch (IllegalArgumentException | io.vblk.sys.NativeException probe) {
                    live = probe instanceof IllegalArgumentException;
                }
                throw new RpcError(live ? RpcError.IN_USE : RpcError.OPEN_FAILED, "cannot listen again on " + spec.socket + ": "
                        + e.getMessage(), e);
            } catch (UncheckedIOException e) {
                throw new RpcError(RpcError.OPEN_FAILED, "cannot listen again on " + spec.socket + ": "
                        + e.getCause().getMessage(), e);
            } catch (IllegalStateException e) {
                throw new RpcError(RpcError.NOT_FOUND, "export '" + spec.id + "' is being closed", e);
            }
            bound = socketFileId(spec.socket);
            socketMissing.set(false);
            return true;
        }
    }

    /**
     * The daemon's periodic look at the socket file ({@link Daemon#checkSockets}): a file found
     * missing is told at once ({@link #checkSocket}); still missing at the next check (so the loss
     * stays visible to export.list and the metrics for one period, and a rename and back is not
     * fought), the export listens there again ({@link #rebind}). A rebind that cannot be done
     * (the directory gone, a file or another server in its place) is logged once per reason and
     * tried again at each check.
     */
    void checkSocketAndRebind() {
        if (!checkSocket()) {
            missingChecks = 0;
            return;
        }
        if (++missingChecks < 2) {
            return;
        }
        try {
            rebind();
            missingChecks = 0;
            rebindError = null;
        } catch (RpcError e) {
            if (!e.getMessage().equals(rebindError)) {
                rebindError = e.getMessage();
                log.info("export " + spec.id + ": " + e.getMessage() + " (tried again at each check)");
            }
        }
    }

    /** Periodic checks in a row that found the socket file missing (the checking thread only). */
    private int missingChecks;
    /** The last reason a periodic rebind failed, logged once (the checking thread only). */
    private String rebindError;

    /** Serializes rebinds of this export (the periodic check and export.rebind). */
    private final Object rebinding = new Object();

    /** What {@link #checkSocket} found last (export.list, export.stats and the metrics look again). */
    boolean socketMissing() {
        return socketMissing.get();
    }

    /** One line describing the export, as {@code vblk serve} prints it at start. */
    String describe() {
        ExportSpec o = spec;
        long bytes = device().config().capacitySectors() * 512;
        String format = o.network != null ? (o.format == ImageFormat.QCOW2 ? "qcow2 on " : "")
                + (o.network.startsWith("rbd:") ? "rbd" : "nbd") + ", "
                : o.format == ImageFormat.RAW ? "" : o.format + ", ";
        return o.imageName() + " (" + format + bytes + " bytes, " + (o.readOnly ? "read-only" : "read-write") + ", "
                + (o.network == null ? backends.inEffect() : "network") + (o.image != null ? ", cache " + (o.direct ? "none" : "writeback") : "")
                + ", wait " + o.wait.cliName() + ", " + o.queues + (o.queues == 1 ? " queue" : " queues")
                + (!o.incoming ? "" : o.network != null && o.format != ImageFormat.QCOW2
                        ? ", incoming: a raw network disk, no locks and no cache to take over" : ", incoming: inactive until its device starts")
                + (o.iopsLimit > 0 ? ", iops limit " + o.iopsLimit : "") + (o.bpsLimit > 0 ? ", bps limit " + o.bpsLimit : "")
                + ")";
    }

    /**
     * Online resize: the image file first when growing (so every sector the guest may address
     * exists), the device and the frontend next, the file last when shrinking.
     *
     * @throws InvalidParams for a size that is not a multiple of 512, or smaller without
     *         {@code allowShrink}
     * @throws RpcError when the image cannot be resized (read-only, a block device)
     */
    Map<String, Object> resize(long sizeBytes, boolean allowShrink) {
        long current = device().config().capacitySectors() * 512;
        if (sizeBytes % 512 != 0) {
            throw new InvalidParams("size must be a multiple of 512 bytes, got " + sizeBytes);
        }
        if (sizeBytes < current && !allowShrink) {
            throw new InvalidParams("size " + sizeBytes + " is below the current " + current
                    + " bytes: shrinking loses the data beyond it; pass allow_shrink to do it anyway");
        }
        boolean told = false;
        boolean drivers = spec.network != null || spec.format != ImageFormat.RAW;
        if (sizeBytes != current && drivers) {
            // qcow2, RBD (NBD refuses): the block driver resizes on its I/O thread.
            if (sizeBytes > current) {
                resizeDrivers(sizeBytes);
            }
            told = server.resize(sizeBytes);
            if (sizeBytes < current) {
                try {
                    resizeDrivers(sizeBytes);
                } catch (RuntimeException e) {
                    server.resize(current); // the image refused to shrink: the guest sees its old size again
                    throw e;
                }
            }
        } else if (sizeBytes != current) {
            if (image != null && sizeBytes > current) {
                resizeImage(sizeBytes);
            }
            told = server.resize(sizeBytes);
            if (image != null && sizeBytes < current) {
                resizeImage(sizeBytes);
            }
            if (image == null) {
                spec.nullSizeBytes = sizeBytes;
                spec.imageArg = ExportSpec.NULL_PREFIX + sizeBytes; // listed as it is now, as config.save saves it
            }
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", spec.id);
        m.put("size_bytes", sizeBytes);
        m.put("previous_size_bytes", current);
        m.put("frontend_notified", told);
        return m;
    }

    private void resizeDrivers(long sizeBytes) {
        try {
            device().resizeDrivers(sizeBytes);
        } catch (UnsupportedOperationException e) {
            throw new RpcError(RpcError.NOT_SUPPORTED, e.getMessage());
        } catch (IllegalArgumentException e) {
            throw new InvalidParams(e.getMessage());
        } catch (java.io.IOException e) {
            throw new RpcError(RpcError.INTERNAL_ERROR, "cannot resize " + spec.imageName() + ": " + e.getMessage());
        }
    }

    private void resizeImage(long sizeBytes) {
        try {
            image.resize(sizeBytes);
        } catch (IllegalStateException e) {
            throw new RpcError(RpcError.NOT_SUPPORTED, e.getMessage());
        } catch (NativeException e) {
            throw new RpcError(RpcError.INTERNAL_ERROR, "cannot resize " + image.path() + ": " + e.getMessage());
        }
    }

    /** Changes the limits (0: none) while the export serves; no restart, no frontend disconnect. */
    void setLimits(long iopsLimit, long bpsLimit) {
        device().setLimits(iopsLimit, bpsLimit);
        spec.iopsLimit = iopsLimit;
        spec.bpsLimit = bpsLimit;
    }

    /** The back end in effect (after any io_uring fallback). */
    BackendKind backend() {
        return backends.inEffect();
    }

    /** Waits until the export serves no frontend and accepts none; true if it did in time. */
    boolean awaitStopped(long timeout, TimeUnit unit) throws InterruptedException {
        return server.awaitStopped(timeout, unit);
    }

    /** Stops serving (any thread): the frontend's connection ends and drains; {@link #close()} then finishes the job. */
    void stop() {
        server.stop();
    }

    /**
     * Stops accepting and serving unless a frontend is attached, atomically with the check
     * ({@link VhostUserServer#stopUnlessServing}): false, and nothing changed, when one is.
     */
    boolean stopUnlessAttached() {
        return server.stopUnlessServing();
    }

    /**
     * Drains in-flight requests, closes the frontend's connection, the device and its I/O
     * threads, removes the socket and closes the image. The image's locks are dropped at once
     * only when the drain ended and every back end closed drained ({@link
     * BackendChoice#closedDrained()}); otherwise they stay (one log line, {@link #locksKept()}).
     */
    @Override
    public void close() {
        boolean drained = false;
        try {
            server.close(); // waits for the drain
            drained = true;
        } finally {
            // Also when the server's close threw: the export is already unlisted (export.remove)
            // and nothing else would ever close its image. Its locks are dropped at once only
            // when nothing this export handed the kernel can still reach the image (review 9b,
            // session 10): otherwise they stay with the open file description, which the kernel
            // holds (a ring's registered file, a request in flight, a helper's fallocate) until
            // the last such write is done, and go when it lets go of it. The image is closed
            // here; while a back end still holds it (each does from creation to its drained
            // close, or its reaping when undrained) the descriptor stays open under it, so no
            // submission can reach whatever file would reuse the number.
            if (image != null) {
                String why = !drained ? "the drain did not end"
                        : !backends.closedDrained() ? "a back end closed with operations still with the kernel, or is still"
                                + " in use by an I/O thread's last round" : null;
                if (why == null) {
                    io.vblk.block.ImageLocks.release(image);
                } else {
                    locksKept = true;
                    log.info("export " + spec.id + ": image " + image.path() + ": locks kept after an undrained close (" + why
                            + "); they go when the kernel lets go of the file, so that no late write lands under another"
                            + " writer's lock");
                }
                image.close();
            }
        }
    }

    /**
     * Whether {@link #close()} kept the image's locks because the export did not close drained:
     * they last until the kernel lets go of the file (see {@link BackendChoice#closedDrained()}).
     */
    boolean locksKept() {
        return locksKept;
    }

    private static void closeQuietly(Image image) {
        if (image != null) {
            io.vblk.block.ImageLocks.release(image); // nothing was served: at once, not when a ring's teardown lets go of the file
            image.close();
        }
    }
}
