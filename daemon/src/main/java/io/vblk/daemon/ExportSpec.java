package io.vblk.daemon;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import io.vblk.aio.BackendKind;
import io.vblk.aio.FixedBufferMode;
import io.vblk.block.ImageFormat;
import io.vblk.block.NetworkDisk;
import io.vblk.block.NetworkTimeouts;
import io.vblk.block.qcow2.Qcow2Options;
import io.vblk.engine.Tuning;
import io.vblk.engine.WaitStrategy;
import io.vblk.vhost.SocketFile;

/**
 * What one export is: the parameters of {@code export.add}, which are also the objects of the
 * configuration file's "exports" list and, spelt {@code --kebab-case}, the options of
 * {@code vblk serve}. One parser and one set of checks for all three, so a boot-time
 * configuration and a runtime one are one schema. Files are checked when the export opens them.
 *
 * <p>Fields are plain and package-private so that a new parameter (another image format, an
 * image address) is one field, one line in {@link #KEYS} and one line in {@link #parse}.
 */
final class ExportSpec {
    /** Largest queue size a frontend may ask for (QEMU's queue-size limit). */
    static final int MAX_QUEUE_SIZE = 1024;
    static final String NULL_PREFIX = "null:";
    /**
     * Caps on what an export keeps of its parameters: every one is written to the configuration
     * file ({@code --persist}, config.save), which the daemon reads back only up to
     * {@link DaemonCommand.Config#MAX_BYTES}; unbounded lists (a request line may hold 1 MiB)
     * would let valid calls write a file the restart refuses (rev13b). A path: PATH_MAX.
     */
    static final int MAX_PATH_CHARS = 4096;
    /** allow_uids entries: far more users than ever share one disk's socket. */
    static final int MAX_ALLOW_UIDS = 1024;
    /** iothreads entries: queue q uses iothreads[q % n], so names past the 64 queues are never used. */
    static final int MAX_IOTHREADS = 64;
    /** socket_group: a group name (32 characters on Linux by default) or number. */
    static final int MAX_GROUP_CHARS = 256;
    /** tls_hostname: a DNS name is at most 253 characters. */
    static final int MAX_HOSTNAME_CHARS = 253;
    /** Default in-flight requests of an export on shared I/O threads. */
    static final int SHARED_BACKEND_DEPTH = 128;

    static final Set<String> KEYS = Set.of("id", "image", "socket", "format", "queues", "queue_size", "read_only", "serial",
            "cache", "aio", "wait", "iothreads", "iops_limit", "bps_limit", "socket_mode", "socket_group", "allow_uids", "backend_depth",
            "l2_cache_tables", "poll_max_us", "sched_slice_us", "bounce_budget", "max_guest_memory", "tls_certificates", "tls_hostname",
            "nbd_connections", "nbd_strict_flush", "fixed_buffers", "locking", "incoming", "network_backing", "backing_dir",
            "connect_timeout_ms", "request_timeout_ms", "retry_timeout_ms");

    String id;
    /** The image as given: a path, or null:SIZE (a null disk's size once resized). */
    volatile String imageArg;
    Path image;
    /** Size of a null disk (export.resize changes it), or -1 when {@link #image} names a file. */
    volatile long nullSizeBytes = -1;
    Path socket;
    /** The image format: named, never guessed. */
    ImageFormat format = ImageFormat.RAW;
    /** The qcow2 options this export opens its image with. */
    Qcow2Options qcow2Options() {
        return Qcow2Options.defaults().readOnly(readOnly).direct(direct).l2CacheTables(l2CacheTables).locking(locking)
                .networkBacking(networkBacking).backingDir(backingDir).incoming(incoming)
                // A network backing image waits for its server as long as the export was told to.
                .networkTimeouts(timeouts);
    }

    /** qcow2: L2 tables the driver caches per I/O thread (each one cluster of memory). */
    int l2CacheTables = Qcow2Options.DEFAULT_L2_CACHE_TABLES;
    /** A network disk's address (nbd://, nbd+unix://, nbds://, nbds+unix://, rbd:), or null. */
    String network;
    /** nbds:// and nbds+unix:// disks: the TLS credentials directory (ca-cert.pem, client-cert.pem, client-key.pem), or null. */
    Path tlsCertificates;
    /** nbds:// and nbds+unix:// disks: the name the server's certificate must carry, or null. */
    String tlsHostname;
    /** NBD disks: connections per I/O thread when the server allows several (CAN_MULTI_CONN). */
    int nbdConnections = 1;
    /**
     * NBD disks: FLUSH fails for good once a lost server had acknowledged unflushed writes
     * (NbdOptions.withStrictFlush). Null when not set: the export inherits the process-wide
     * default, {@code -Dvblk.nbd.strictFlush}, at each open, and a saved config keeps it unset
     * (saving the value in effect would fix the default of the day into the export).
     */
    Boolean nbdStrictFlush;
    /** Network disks: how long to wait for the server (connect, a request's reply, a lost server's return). */
    NetworkTimeouts timeouts = NetworkTimeouts.DEFAULTS;
    int queues = 1;
    int queueSize = MAX_QUEUE_SIZE;
    boolean readOnly;
    /** read_only as given: a network disk's server may make {@link #readOnly} true at open, and tomorrow may not. */
    boolean readOnlyGiven;
    String serial = "vblk";
    /** The back end asked for, or null for the default (io_uring with fallback). */
    BackendKind aio;
    boolean direct = true;
    WaitStrategy wait = WaitStrategy.ADAPTIVE;
    /** Adaptive waiting's longest poll window. */
    long pollMaxUs = Tuning.defaults().pollMaxNs() / 1000;
    /** The scheduler slice its I/O threads ask for while contended (0: the kernel's default always). */
    long schedSliceUs = Tuning.defaults().schedSliceNs() / 1000;
    /** Whether guest memory is registered with io_uring as fixed buffers (auto: small tables only). */
    FixedBufferMode fixedBuffers = FixedBufferMode.AUTO;
    /** QEMU-compatible image locking of image files (and qcow2 backing files): on, off or auto. */
    io.vblk.sys.ImageLock.Locking locking = io.vblk.sys.ImageLock.Locking.ON;
    /** qcow2: whether a network backing name read from the image (nbd://, rbd:) is followed (never with Ceph options). */
    boolean networkBacking;
    /** qcow2: the directory every local backing file must lie under, or null for anywhere (as QEMU). */
    Path backingDir;
    /** A migration's destination: the image opens inactive and becomes active at the device's start. */
    boolean incoming;
    List<String> iothreads = List.of();
    /**
     * Requests in flight per device thread (request slots, each with room for SEG_MAX segments);
     * 0: the engine's default, queues x queue_size. Exports on shared I/O threads default to
     * {@link #SHARED_BACKEND_DEPTH}, which keeps an idle export's memory small.
     */
    int backendDepth;
    long iopsLimit;
    long bpsLimit;
    /** Raw images: the bounce memory the export may borrow at once (aio BounceBudget). */
    long bounceBudget = io.vblk.aio.BounceBudget.DEFAULT_BYTES;
    /** The most guest memory a frontend's memory table may map (vhost VhostUserServer.Builder.maxGuestMemory). */
    long maxGuestMemory = io.vblk.vhost.VhostUserServer.DEFAULT_MAX_GUEST_MEMORY;
    int socketMode = SocketFile.DEFAULT_MODE;
    String socketGroup;
    int[] allowUids;

    /**
     * Parses and checks {@code p}; {@code defaultId} is used when no id is given (vblk serve).
     *
     * @throws InvalidParams naming the parameter at fault
     */
    static ExportSpec parse(Params p, String defaultId) {
        return parse(p, defaultId, Tuning.defaults().schedSliceNs() / 1000);
    }

    /**
     * As {@link #parse(Params, String)}, with {@code schedSliceUs} the slice of an export that
     * sets no {@code sched_slice_us} ({@code vblk daemon --sched-slice-us}); the export's
     * {@link #toConfig} writes the slice in effect either way.
     */
    static ExportSpec parse(Params p, String defaultId, long schedSliceUs) {
        p.rejectUnknown(KEYS);
        ExportSpec s = new ExportSpec();
        s.schedSliceUs = schedSliceUs;
        s.id = defaultId != null && !p.has("id") ? defaultId : p.requiredString("id");
        if (!s.id.matches("[A-Za-z0-9_.-]{1,64}")) {
            throw new InvalidParams(p.name("id") + " must be 1 to 64 letters, digits, '.', '_' or '-', got '" + s.id + "'");
        }
        String imageArg = bounded(p, "image", p.requiredString("image"), MAX_PATH_CHARS);
        s.socket = Path.of(bounded(p, "socket", p.requiredString("socket"), MAX_PATH_CHARS));
        String format = p.string("format", "raw");
        try {
            s.format = ImageFormat.parse(format);
        } catch (IllegalArgumentException e) {
            throw new InvalidParams(p.name("format") + ": " + e.getMessage());
        }
        s.l2CacheTables = (int) p.integer("l2_cache_tables", 2, 65536, Qcow2Options.DEFAULT_L2_CACHE_TABLES);
        if (p.has("l2_cache_tables") && s.format != ImageFormat.QCOW2) {
            throw new InvalidParams(p.name("l2_cache_tables") + " applies to format qcow2 only");
        }
        s.queues = (int) p.integer("queues", 1, 64, 1);
        s.queueSize = (int) p.integer("queue_size", 1, MAX_QUEUE_SIZE, MAX_QUEUE_SIZE);
        if (Integer.bitCount(s.queueSize) != 1) {
            throw new InvalidParams(p.name("queue_size") + " must be a power of two, got " + s.queueSize);
        }
        s.readOnly = p.bool("read_only");
        s.readOnlyGiven = s.readOnly;
        s.serial = p.string("serial", "vblk");
        if (s.serial.length() > 20 || !s.serial.chars().allMatch(c -> c >= 0x20 && c < 0x7f)) {
            throw new InvalidParams(p.name("serial") + " must be at most 20 printable ASCII characters: '" + s.serial + "'");
        }
        String aio = p.string("aio", null);
        if (aio != null) {
            try {
                s.aio = BackendKind.parse(aio);
            } catch (IllegalArgumentException e) {
                throw new InvalidParams(p.name("aio") + ": " + e.getMessage());
            }
        }
        String cache = p.string("cache", "none");
        switch (cache) {
            case "none" -> s.direct = true;
            case "writeback" -> s.direct = false;
            default -> throw new InvalidParams(p.name("cache") + " must be none or writeback: '" + cache + "'");
        }
        String wait = p.string("wait", null);
        if (wait != null) {
            try {
                s.wait = WaitStrategy.parse(wait);
            } catch (IllegalArgumentException e) {
                throw new InvalidParams(p.name("wait") + ": " + e.getMessage());
            }
        }
        s.pollMaxUs = p.integer("poll_max_us", 0, 1_000_000, s.pollMaxUs);
        s.schedSliceUs = schedSliceUs(p, "sched_slice_us", s.schedSliceUs);
        String fixed = p.string("fixed_buffers", null);
        if (fixed != null) {
            try {
                s.fixedBuffers = FixedBufferMode.parse(fixed);
            } catch (IllegalArgumentException e) {
                throw new InvalidParams(p.name("fixed_buffers") + ": " + e.getMessage());
            }
        }
        String locking = p.string("locking", null);
        if (locking != null) {
            try {
                s.locking = io.vblk.sys.ImageLock.Locking.parse(locking);
            } catch (IllegalArgumentException e) {
                throw new InvalidParams(p.name("locking") + ": " + e.getMessage());
            }
        }
        s.incoming = p.bool("incoming");
        s.networkBacking = p.bool("network_backing");
        String backingDir = p.string("backing_dir", null, MAX_PATH_CHARS);
        if (backingDir != null) {
            s.backingDir = Path.of(backingDir);
            if (!s.backingDir.isAbsolute() || !java.nio.file.Files.isDirectory(s.backingDir)) {
                throw new InvalidParams(p.name("backing_dir") + " must name an existing directory by an absolute path: "
                        + backingDir);
            }
        }
        if ((p.has("network_backing") || backingDir != null) && s.format != ImageFormat.QCOW2) {
            throw new InvalidParams("network_backing and backing_dir apply to format qcow2 only");
        }
        s.iothreads = p.strings("iothreads", MAX_IOTHREADS);
        s.backendDepth = (int) p.integer("backend_depth", 1, 4096, s.iothreads.isEmpty() ? 0 : SHARED_BACKEND_DEPTH);
        s.iopsLimit = p.integer("iops_limit", 0, Long.MAX_VALUE, 0);
        s.bpsLimit = p.size("bps_limit", 0, 0);
        s.bounceBudget = p.size("bounce_budget", io.vblk.aio.BackendOptions.DEFAULT_MAX_BOUNCE_BYTES,
                io.vblk.aio.BounceBudget.DEFAULT_BYTES);
        s.maxGuestMemory = p.size("max_guest_memory", io.vblk.vhost.VhostUserServer.MIN_GUEST_MEMORY,
                io.vblk.vhost.VhostUserServer.DEFAULT_MAX_GUEST_MEMORY);
        if (s.maxGuestMemory > io.vblk.vhost.VhostUserServer.MAX_GUEST_MEMORY) {
            throw new InvalidParams(p.name("max_guest_memory") + " must be at most "
                    + io.vblk.vhost.VhostUserServer.MAX_GUEST_MEMORY + " (16T), got " + s.maxGuestMemory);
        }
        s.socketMode = socketMode(p);
        String group = p.string("socket_group", null, MAX_GROUP_CHARS);
        if (group != null) {
            if (group.isBlank()) {
                throw new InvalidParams(p.name("socket_group") + " needs a group name or number");
            }
            s.socketGroup = group.trim();
        }
        long[] uids = p.integers("allow_uids", 0, 0xFFFF_FFFEL, MAX_ALLOW_UIDS);
        if (uids != null) {
            if (uids.length == 0) {
                throw new InvalidParams(p.name("allow_uids") + " must list at least one uid");
            }
            s.allowUids = new int[uids.length];
            for (int i = 0; i < uids.length; i++) {
                s.allowUids[i] = (int) uids[i];
            }
        }
        s.setImage(p, imageArg);
        s.nbdConnections = (int) p.integer("nbd_connections", 1, 16, 1);
        if (p.has("nbd_connections") && !s.nbdImage()) {
            throw new InvalidParams(p.name("nbd_connections") + " applies to nbd:// images only, not " + imageArg);
        }
        if (p.has("nbd_strict_flush")) {
            if (!s.nbdImage()) {
                throw new InvalidParams(p.name("nbd_strict_flush") + " applies to nbd:// images only, not " + imageArg);
            }
            s.nbdStrictFlush = p.bool("nbd_strict_flush");
        }
        s.setTls(p);
        s.setTimeouts(p);
        if (p.remote()) {
            s.requireAbsolute(p);
        }
        if (wait == null && s.network != null) {
            // A network disk answers in tens of microseconds or more: polling for it only burns
            // a core (measured: 3x the CPU per I/O at depth 64 on a busy host, no IOPS gained).
            s.wait = WaitStrategy.BLOCKING;
        }
        return s;
    }

    /**
     * Network disks' waits for their server. Connect and request times apply to NBD only (librbd
     * has its own); the retry time to NBD and RBD. A qcow2 image with {@code network_backing}
     * takes all three whatever its own kind: its backing image may be an NBD or RBD disk the
     * image names, and it waits as the export says (which kind it is is known only at open).
     * Refused for any other file or null image, where they would silently mean nothing.
     */
    private void setTimeouts(Params p) {
        boolean backing = backingOnNetwork();
        for (String key : new String[] {"connect_timeout_ms", "request_timeout_ms"}) {
            if (p.has(key) && !nbdImage() && !backing) {
                throw new InvalidParams(p.name(key) + " applies to nbd:// images only (and to a qcow2 image"
                        + " with network_backing), not " + imageArg);
            }
        }
        if (p.has("retry_timeout_ms") && network == null && !backing) {
            throw new InvalidParams(p.name("retry_timeout_ms") + " applies to network images (nbd://, rbd:) only (and to a"
                    + " qcow2 image with network_backing), not " + imageArg);
        }
        NetworkTimeouts d = NetworkTimeouts.DEFAULTS;
        timeouts = new NetworkTimeouts((int) p.integer("connect_timeout_ms", 1, NetworkTimeouts.MAX_MS, d.connectMs()),
                (int) p.integer("request_timeout_ms", 1, NetworkTimeouts.MAX_MS, d.requestMs()),
                (int) p.integer("retry_timeout_ms", 0, NetworkTimeouts.MAX_MS, d.retryMs()));
    }

    /** Whether the image is an NBD disk (nbd://, nbd+unix://, nbds://, nbds+unix://). */
    private boolean nbdImage() {
        return network != null && !network.startsWith("rbd:");
    }

    /** Whether a qcow2 image may follow a network backing name (the timeouts reach its connections). */
    private boolean backingOnNetwork() {
        return format == ImageFormat.QCOW2 && networkBacking;
    }

    /**
     * Permission bits, at most 0777: set-id and sticky bits mean nothing on a socket, and a mode
     * the owner cannot write would lock the server's own user out. Octal text, or a JSON number
     * (which is taken as the mode's value, so 384 is 0600).
     */
    private static int socketMode(Params p) {
        if (!p.has("socket_mode")) {
            return SocketFile.DEFAULT_MODE;
        }
        int mode;
        String text;
        if (p.isString("socket_mode")) {
            text = p.string("socket_mode", null);
            try {
                mode = Integer.parseInt(text.trim(), 8);
            } catch (NumberFormatException e) {
                throw new InvalidParams(p.name("socket_mode") + " expects an octal mode such as 0600 or 660, got '" + text + "'");
            }
        } else {
            mode = (int) p.integer("socket_mode", 0, 0777, 0600);
            text = "0" + Integer.toOctalString(mode);
        }
        if (mode < 0 || mode > 0777) {
            throw new InvalidParams(p.name("socket_mode") + " must be 0 to 0777 (permission bits only), got '" + text + "'");
        }
        if ((mode & 0600) != 0600) {
            throw new InvalidParams(p.name("socket_mode") + " " + text + " must keep read and write for the owner (0600)");
        }
        return mode;
    }

    private void setImage(Params p, String value) {
        imageArg = value;
        if (value.startsWith(NULL_PREFIX)) {
            Params size = p.sameKind(Map.of("image", value.substring(NULL_PREFIX.length()))); // an RPC error names "image", not --image
            nullSizeBytes = size.size("image", 1, 0);
            if (nullSizeBytes % 512 != 0) {
                throw new InvalidParams(p.name("image") + " " + value + ": the size must be a multiple of 512 bytes");
            }
            if (aio != null && aio != BackendKind.NULL) {
                throw new InvalidParams(p.name("aio") + " " + aio.cliName() + " needs an image file, not " + value);
            }
            aio = BackendKind.NULL;
        } else if (NetworkDisk.isAddress(value)) {
            network = value;
        } else {
            image = Path.of(value);
        }
        if (format != ImageFormat.RAW && image == null && network == null) {
            throw new InvalidParams(p.name("format") + " " + format + " needs an image file or a network disk, not " + value);
        }
    }

    private void setTls(Params p) {
        String dir = p.string("tls_certificates", null, MAX_PATH_CHARS);
        String name = p.string("tls_hostname", null, MAX_HOSTNAME_CHARS);
        if (dir == null && name == null) {
            return;
        }
        boolean tlsAddress = network != null && network.startsWith("nbds");
        if (!tlsAddress) {
            throw new InvalidParams(p.name(dir != null ? "tls_certificates" : "tls_hostname")
                    + " applies to nbds:// and nbds+unix:// images, not " + imageArg);
        }
        if (dir != null) {
            if (dir.isBlank()) {
                throw new InvalidParams(p.name("tls_certificates") + " needs a directory");
            }
            tlsCertificates = Path.of(dir);
        }
        if (name != null) {
            if (name.isBlank()) {
                throw new InvalidParams(p.name("tls_hostname") + " needs a host name");
            }
            tlsHostname = name.trim();
        }
    }

    /**
     * Over the control socket every file name must be absolute: a relative one would be taken
     * against the daemon's working directory, not the caller's, and serve another disk (vblk ctl
     * makes its own absolute first). The command line and the --config file resolve theirs.
     */
    private void requireAbsolute(Params p) {
        absolute(p, "image", image);
        absolute(p, "socket", socket);
        absolute(p, "tls_certificates", tlsCertificates);
        absolute(p, "backing_dir", backingDir);
    }

    private static void absolute(Params p, String key, Path path) {
        if (path != null && !path.isAbsolute()) {
            throw new InvalidParams(p.name(key) + " must be an absolute file name (the daemon's working directory is not"
                    + " the caller's), got '" + path + "'");
        }
    }

    /** {@code value} of {@code key}, refused when longer than {@code maxChars}. */
    private static String bounded(Params p, String key, String value, int maxChars) {
        if (value.length() > maxChars) {
            throw new InvalidParams(p.name(key) + " must be at most " + maxChars + " characters, got " + value.length());
        }
        return value;
    }

    /** What {@link #image} names, for messages. */
    String imageName() {
        if (network != null) {
            return network;
        }
        return image != null ? image.toString() : NULL_PREFIX + nullSizeBytes;
    }

    /** The strict flush in effect: the export's own, else the process-wide default ({@code -Dvblk.nbd.strictFlush}). */
    boolean nbdStrictFlushInEffect() {
        return nbdStrictFlush != null ? nbdStrictFlush : io.vblk.block.nbd.NbdOptions.defaults().strictFlush();
    }

    /**
     * The parameters as {@code export.list} shows them (the same names export.add takes).
     * {@code nbd_strict_flush} is the value in effect, inherited or not ({@link #toConfig} saves
     * it only when the export set it).
     */
    Map<String, Object> toParams() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("image", imageArg);
        m.put("socket", socket.toString());
        m.put("format", format.toString());
        if (format == ImageFormat.QCOW2) {
            m.put("l2_cache_tables", l2CacheTables);
        }
        m.put("queues", queues);
        m.put("queue_size", queueSize);
        m.put("read_only", readOnly);
        m.put("serial", serial);
        m.put("cache", direct ? "none" : "writeback");
        m.put("aio", aio == null ? BackendKind.IO_URING.cliName() : aio.cliName());
        m.put("wait", wait.cliName());
        m.put("poll_max_us", pollMaxUs);
        m.put("sched_slice_us", schedSliceUs);
        m.put("fixed_buffers", fixedBuffers.cliName());
        m.put("locking", locking.cliName());
        m.put("incoming", incoming);
        if (format == ImageFormat.QCOW2) {
            m.put("network_backing", networkBacking);
            if (backingDir != null) {
                m.put("backing_dir", backingDir.toString());
            }
        }
        m.put("iops_limit", iopsLimit);
        m.put("bps_limit", bpsLimit);
        m.put("bounce_budget", bounceBudget);
        m.put("max_guest_memory", maxGuestMemory);
        if (tlsCertificates != null) {
            m.put("tls_certificates", tlsCertificates.toString());
        }
        if (tlsHostname != null) {
            m.put("tls_hostname", tlsHostname);
        }
        if (nbdImage()) {
            m.put("nbd_connections", nbdConnections);
            m.put("nbd_strict_flush", nbdStrictFlushInEffect());
        }
        // Listed wherever they apply: an NBD image, or a qcow2 image's network backing.
        if (nbdImage() || backingOnNetwork()) {
            m.put("connect_timeout_ms", timeouts.connectMs());
            m.put("request_timeout_ms", timeouts.requestMs());
        }
        if (network != null || backingOnNetwork()) {
            m.put("retry_timeout_ms", timeouts.retryMs());
        }
        m.put("iothreads", iothreads);
        m.put("socket_mode", "0" + Integer.toOctalString(socketMode));
        return m;
    }

    /**
     * The {@code export.add} parameters that make this export again as it is now: every
     * parameter in effect (defaults written out, so a restart under a later version with other
     * defaults serves the same disk), a null disk's size after {@code export.resize}, the limits
     * after {@code export.set_limits}, paths made absolute (a restarted daemon may run elsewhere).
     * What only applies to some images is written only for them, as {@link #parse} takes it; what
     * the export merely found (the size of a file, the back end after a fallback) is not written.
     * {@code incoming} stays as given (see the README's "Restarts").
     */
    Map<String, Object> toConfig() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("image", nullSizeBytes >= 0 ? NULL_PREFIX + nullSizeBytes : network != null ? network : image.toAbsolutePath().toString());
        m.put("socket", socket.toAbsolutePath().toString());
        m.put("format", format.cliName());
        if (format == ImageFormat.QCOW2) {
            m.put("l2_cache_tables", l2CacheTables);
            m.put("network_backing", networkBacking);
            if (backingDir != null) {
                m.put("backing_dir", backingDir.toString());
            }
        }
        m.put("queues", queues);
        m.put("queue_size", queueSize);
        m.put("read_only", readOnlyGiven);
        m.put("serial", serial);
        m.put("cache", direct ? "none" : "writeback");
        if (aio != null) {
            m.put("aio", aio.cliName()); // unset: io_uring with its fallback, which an explicit io_uring is too
        }
        m.put("wait", wait.cliName());
        m.put("poll_max_us", pollMaxUs);
        m.put("sched_slice_us", schedSliceUs);
        m.put("fixed_buffers", fixedBuffers.cliName());
        m.put("locking", locking.cliName());
        m.put("incoming", incoming);
        m.put("iothreads", List.copyOf(iothreads));
        if (backendDepth > 0) {
            m.put("backend_depth", backendDepth);
        }
        m.put("iops_limit", iopsLimit);
        m.put("bps_limit", bpsLimit);
        m.put("bounce_budget", bounceBudget);
        m.put("max_guest_memory", maxGuestMemory);
        m.put("socket_mode", "0" + Integer.toOctalString(socketMode));
        if (socketGroup != null) {
            m.put("socket_group", socketGroup);
        }
        if (allowUids != null) {
            m.put("allow_uids", java.util.Arrays.stream(allowUids).mapToLong(Integer::toUnsignedLong).boxed().toList());
        }
        if (tlsCertificates != null) {
            m.put("tls_certificates", tlsCertificates.toAbsolutePath().toString());
        }
        if (tlsHostname != null) {
            m.put("tls_hostname", tlsHostname);
        }
        if (nbdImage()) {
            m.put("nbd_connections", nbdConnections);
            if (nbdStrictFlush != null) {
                // Only when the export set it: unset, it keeps following -Dvblk.nbd.strictFlush.
                m.put("nbd_strict_flush", nbdStrictFlush);
            }
        }
        if (nbdImage() || backingOnNetwork()) {
            m.put("connect_timeout_ms", timeouts.connectMs());
            m.put("request_timeout_ms", timeouts.requestMs());
        }
        if (network != null || backingOnNetwork()) {
            m.put("retry_timeout_ms", timeouts.retryMs());
        }
        return m;
    }

    /**
     * A scheduler slice in microseconds ({@code sched_slice_us} of export.add and iothread.add):
     * 0, or one the kernel takes (100 to 100000).
     */
    static long schedSliceUs(Params p, String key, long defaultUs) {
        long us = p.integer(key, 0, io.vblk.sys.SchedSlice.MAX_SLICE_NS / 1000, defaultUs);
        if (us != 0 && us < io.vblk.sys.SchedSlice.MIN_SLICE_NS / 1000) {
            throw new InvalidParams(p.name(key) + " must be 0 (the kernel's default slice) or 100 to 100000 microseconds, got " + us);
        }
        return us;
    }
}
