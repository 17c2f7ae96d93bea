package io.vblk.daemon;

import java.util.LinkedHashMap;
import java.util.Map;

import picocli.CommandLine.Option;

/**
 * The export options of {@code vblk serve}: the parameters of {@code export.add}, spelt
 * {@code --kebab-case}. They are kept as typed text and checked by {@link ExportSpec#parse}, so
 * the command line, the configuration file and JSON-RPC share one set of checks and messages.
 * A new export parameter is one field here and one in {@link ExportSpec}.
 */
final class ExportOptions {
    @Option(names = "--id", paramLabel = "ID", description = "the export's id in logs and metrics (default disk0)")
    String id;

    @Option(names = "--image", paramLabel = "PATH|null:SIZE|ADDRESS", description = {
        "a disk image file (raw; qcow2 with --format qcow2) or block device; a raw size must be a multiple of 512; "
            + "or a network disk: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://... (NBD over TLS), "
            + "rbd:POOL/IMAGE[@SNAP][:conf=PATH].",
        "--image null:SIZE: a disk of SIZE bytes (suffix K, M, G or T: powers of 1024) whose requests complete at once "
            + "without touching any data (benchmarks)"})
    String image;

    @Option(names = "--socket", paramLabel = "PATH", description = "Unix socket to listen on, created with mode 0600; "
            + "a stale socket there is replaced, any other file is an error")
    String socket;

    @Option(names = "--format", paramLabel = "FORMAT", description = "image format, never guessed: raw (default) or qcow2")
    String format;

    @Option(names = "--l2-cache-tables", paramLabel = "N", description = "qcow2: L2 tables cached per I/O thread, 2 to "
            + "65536, each one cluster of memory (default 32)")
    String l2CacheTables;

    @Option(names = "--socket-mode", paramLabel = "OCTAL", description = "permission bits of the socket file, 0600 to 0777 "
            + "(default 0600)")
    String socketMode;

    @Option(names = "--socket-group", paramLabel = "NAME|GID", description = "group of the socket file (default: the "
            + "server's); with --socket-mode 0660 that group's members may connect")
    String socketGroup;

    @Option(names = {"--allow-uid", "--allow-uids"}, paramLabel = "UID[,UID...]", description = "serve only frontends whose "
            + "uid (SO_PEERCRED) is listed; any other connection is logged in one line and closed (default: the server's "
            + "own uid and root)")
    String allowUids;

    @Option(names = "--queues", paramLabel = "N", description = "request queues, 1 to 64 (default 1)")
    String queues;

    @Option(names = "--queue-size", paramLabel = "N", description = "largest ring a frontend may set up, a power of two "
            + "up to 1024 (default 1024)")
    String queueSize;

    @Option(names = "--read-only", arity = "0", description = "open the image read-only (O_RDONLY) and offer a read-only disk")
    boolean readOnly;

    @Option(names = "--serial", paramLabel = "ID", description = "the disk's serial number, up to 20 ASCII characters "
            + "(default vblk)")
    String serial;

    @Option(names = "--aio", paramLabel = "KIND", description = "I/O back end: io_uring (default; falls back to linux-aio "
            + "with a note if io_uring cannot be set up), linux-aio, threads, or null")
    String aio;

    @Option(names = "--cache", paramLabel = "MODE", description = "none: O_DIRECT, bypassing the host page cache "
            + "(default); writeback: buffered I/O through the host page cache")
    String cache;

    @Option(names = "--wait", paramLabel = "STRATEGY", description = "how an idle I/O thread waits: adaptive (default: "
            + "polls 50 us, then sleeps until kicked; blocking for a network disk), blocking, sleeping, yielding, busy-spin")
    String wait;

    @Option(names = "--poll-max-us", paramLabel = "US", description = "adaptive waiting: the longest poll window in "
            + "microseconds (default 100); the window grows while polling catches work and shrinks when it does not, "
            + "0 never polls")
    String pollMaxUs;

    @Option(names = "--sched-slice-us", paramLabel = "US", description = "the scheduler slice in microseconds the "
            + "export's I/O threads ask for while they lose time waiting for a CPU and do not poll (EEVDF, Linux 6.12 or "
            + "later: their wake-ups then preempt a busy process instead of waiting out its slice), 100 to 100000; 0 keeps "
            + "the kernel's default slice (default: 0)")
    String schedSliceUs;

    @Option(names = "--fixed-buffers", paramLabel = "MODE", description = "io_uring: register the guest's memory as "
            + "fixed buffers, so one-segment transfers skip pinning the guest pages per I/O, at the price of pinning the whole "
            + "memory table (resident, no ballooning) while it is in use: auto (default: only when the table is at most "
            + "min(2 GiB, MemTotal/8)), on (any table that fits io_uring's limits and the host's memory), off")
    String fixedBuffers;

    @Option(names = "--locking", paramLabel = "MODE", description = "QEMU-compatible image locking (the OFD locks of "
            + "QEMU's file driver) of the image and its backing files: on (default: refuse an image QEMU, qemu-img or another "
            + "vblk uses in a conflicting way), off (no locks: a filesystem without OFD locks, or a deliberate second user such "
            + "as a migration's destination without --incoming), auto (on, but go on unlocked where the filesystem refuses OFD locks)")
    String locking;

    @Option(names = "--network-backing", arity = "0", description = "qcow2: follow a backing name the image records "
            + "that is a network address (nbd://, nbd+unix://, rbd:POOL/IMAGE without options); refused by default, since the "
            + "image, not the operator, chose where the daemon connects")
    boolean networkBacking;

    @Option(names = "--backing-dir", paramLabel = "DIR", description = "qcow2: every local backing file (links and .. "
            + "resolved) must lie under DIR (default: anywhere the daemon may read, as QEMU)")
    String backingDir;

    @Option(names = "--incoming", arity = "0", description = "a live migration's destination (as QEMU's -incoming): open "
            + "the image inactive (the locks of a reader that lets others write) while the source's backend still writes it, "
            + "and take the writer's locks when the frontend starts the device after the migration; a start while another "
            + "process still holds them is refused and logged; a qcow2 image also reads all its metadata again then; "
            + "a network disk has no locks (the migration flow keeps one writer): raw serves as is, qcow2 opens inactive")
    boolean incoming;

    @Option(names = "--iops-limit", paramLabel = "N", description = "at most N requests per second (default 0: no limit)")
    String iopsLimit;

    @Option(names = "--bps-limit", paramLabel = "N", description = "at most N bytes per second, suffix K, M or G allowed "
            + "(default 0: no limit)")
    String bpsLimit;

    @Option(names = "--bounce-budget", paramLabel = "BYTES", description = "raw images: bounce memory the export may borrow "
            + "at once for transfers over 64 KiB whose guest buffers miss O_DIRECT's alignment, suffix K, M or G allowed, at "
            + "least 4M (default 64M); a transfer beyond it waits for memory, never fails")
    String bounceBudget;

    @Option(names = "--max-guest-memory", paramLabel = "SIZE", description = "the most guest memory a frontend's memory "
            + "table may map (its regions together), suffix M, G or T allowed, 1M to 16T (default 1T); a larger table is "
            + "refused. Pages the device writes are allocated in this process when the frontend never touched them: run "
            + "the daemon in a memory cgroup sized for its guests")
    String maxGuestMemory;

    @Option(names = "--tls-certificates", paramLabel = "DIR", description = "nbds:// and nbds+unix:// images: TLS "
            + "credentials directory holding ca-cert.pem (the CA that signed the server's certificate) and, for a server "
            + "that verifies clients, client-cert.pem and client-key.pem (default: the URI's tls-certificates=DIR, else "
            + "the JVM's trust store)")
    String tlsCertificates;

    @Option(names = "--tls-hostname", paramLabel = "NAME", description = "nbds:// and nbds+unix:// images: the name the "
            + "server's certificate must carry (default: the URI's host; over a Unix socket only the CA is checked "
            + "unless a name is given)")
    String tlsHostname;

    @Option(names = "--nbd-connections", paramLabel = "N", description = "NBD images: connections each I/O thread opens "
            + "to the export when the server allows several (CAN_MULTI_CONN), its requests dealt round robin over them; "
            + "1 to 16 (default 1). A server that serves each connection from its own thread (nbdkit) then serves one "
            + "disk from several; without CAN_MULTI_CONN one connection is opened")
    String nbdConnections;

    @Option(names = "--nbd-strict-flush", arity = "0..1", fallbackValue = "true", paramLabel = "BOOL", description = "NBD "
            + "images: once a connection is lost while the server had acknowledged writes no FLUSH covered, every later "
            + "FLUSH fails with IOERR until the disk is reopened; for a server whose write cache dies with its process "
            + "(nbdkit's cache filter). Default: the system property vblk.nbd.strictFlush, else off (as QEMU's client: "
            + "qemu-nbd's acknowledged writes outlive its process); --nbd-strict-flush=false turns it off")
    Boolean nbdStrictFlush;

    @Option(names = "--connect-timeout-ms", paramLabel = "MS", description = "NBD images (and a qcow2 image's "
            + "network backing): how long one connect and handshake together may take, the first and every reconnect "
            + "(default 5000; at most 3600000)")
    String connectTimeoutMs;

    @Option(names = "--request-timeout-ms", paramLabel = "MS", description = "NBD images (and a qcow2 image's network "
            + "backing): how long a request waits for its reply before the connection counts as dead and is reopened (default 30000)")
    String requestTimeoutMs;

    @Option(names = "--retry-timeout-ms", paramLabel = "MS", description = "Network images (NBD, RBD, and a qcow2 "
            + "image's network backing): how long requests wait for a lost server to come back before they fail with "
            + "EIO (default 30000; NBD: 0 fails them at once; RBD rounds up to whole seconds, at least 1)")
    String retryTimeoutMs;

    /** The options given, as export.add parameters (text, as typed). */
    Map<String, Object> toParams() {
        Map<String, Object> m = new LinkedHashMap<>();
        put(m, "id", id);
        put(m, "image", image);
        put(m, "socket", socket);
        put(m, "format", format);
        put(m, "l2_cache_tables", l2CacheTables);
        put(m, "socket_mode", socketMode);
        put(m, "socket_group", socketGroup);
        put(m, "allow_uids", allowUids);
        put(m, "queues", queues);
        put(m, "queue_size", queueSize);
        if (readOnly) {
            m.put("read_only", Boolean.TRUE);
        }
        put(m, "serial", serial);
        put(m, "aio", aio);
        put(m, "cache", cache);
        put(m, "wait", wait);
        put(m, "poll_max_us", pollMaxUs);
        put(m, "sched_slice_us", schedSliceUs);
        put(m, "fixed_buffers", fixedBuffers);
        put(m, "locking", locking);
        if (networkBacking) {
            m.put("network_backing", Boolean.TRUE);
        }
        put(m, "backing_dir", backingDir);
        if (incoming) {
            m.put("incoming", Boolean.TRUE);
        }
        put(m, "iops_limit", iopsLimit);
        put(m, "bps_limit", bpsLimit);
        put(m, "bounce_budget", bounceBudget);
        put(m, "max_guest_memory", maxGuestMemory);
        put(m, "tls_certificates", tlsCertificates);
        put(m, "tls_hostname", tlsHostname);
        put(m, "nbd_connections", nbdConnections);
        if (nbdStrictFlush != null) {
            m.put("nbd_strict_flush", nbdStrictFlush);
        }
        put(m, "connect_timeout_ms", connectTimeoutMs);
        put(m, "request_timeout_ms", requestTimeoutMs);
        put(m, "retry_timeout_ms", retryTimeoutMs);
        return m;
    }

    private static void put(Map<String, Object> m, String key, String value) {
        if (value != null) {
            m.put(key, value);
        }
    }
}
