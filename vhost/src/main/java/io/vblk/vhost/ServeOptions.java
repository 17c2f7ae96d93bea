package io.vblk.vhost;

import java.nio.file.Path;
import java.util.Locale;

import io.vblk.aio.BackendKind;
import io.vblk.engine.ByteSize;
import io.vblk.engine.WaitStrategy;

/**
 * The options of {@code vblk serve}, parsed and checked for form (files are checked when the
 * command opens them). Both {@code --name value} and {@code --name=value} are accepted.
 */
final class ServeOptions {
    static final String USAGE = String.join("\n",
            "Usage: vblk serve --image PATH --socket PATH [options]",
            "",
            "Serves a disk image as a vhost-user-blk backend on a Unix socket, to one frontend at a",
            "time (QEMU's vhost-user-blk-pci, Cloud Hypervisor, ...). After a frontend disconnects",
            "it keeps listening for the next. SIGINT or SIGTERM drain in-flight requests, remove the",
            "socket and exit with status 0.",
            "",
            "  --image PATH       raw disk image or block device; its size must be a multiple of 512",
            "  --image nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH",
            "                     a disk on an NBD server (TCP to loopback only; no TLS yet)",
            "  --image rbd:POOL/IMAGE[@SNAP][:conf=PATH][:id=USER]",
            "                     a Ceph RBD image (a snapshot is read-only)",
            "  --image null:SIZE  a disk of SIZE bytes (suffix K, M, G or T: powers of 1024) whose",
            "                     requests complete at once without touching any data (benchmarks)",
            "  --socket PATH      Unix socket to listen on, created with mode 0600; a stale socket",
            "                     there is replaced, any other file is an error",
            "  --socket-mode OCTAL",
            "                     permission bits of the socket file, 0600 to 0777 (default 0600)",
            "  --socket-group NAME|GID",
            "                     group of the socket file (default: the server's); with",
            "                     --socket-mode 0660 that group's members may connect",
            "  --allow-uid UID[,UID...]",
            "                     serve only frontends whose uid (SO_PEERCRED) is listed; any other",
            "                     connection is logged in one line and closed, and the next one is",
            "                     served (default: the server's own uid and root)",
            "  --format FORMAT    raw (default) or qcow2, never guessed; qcow2 follows the backing",
            "                     chain named in the image (read-only, relative to its directory)",
            "  --queues N         request queues, 1 to 64 (default 1)",
            "  --read-only        open the image read-only (O_RDONLY) and offer a read-only disk",
            "  --serial ID        the disk's serial number, up to 20 ASCII characters (default vblk)",
            "  --aio KIND         I/O back end: io_uring (default; falls back to linux-aio with a note",
            "                     if io_uring cannot be set up), linux-aio, threads, or null",
            "  --cache MODE       none: O_DIRECT, bypassing the host page cache (default);",
            "                     writeback: buffered I/O through the host page cache",
            "  --wait STRATEGY    how an idle I/O thread waits: adaptive (default: polls 50 us, then",
            "                     sleeps until kicked), blocking, sleeping, yielding, busy-spin",
            "  --iops-limit N     at most N requests per second (default 0: no limit)",
            "  --bps-limit N      at most N bytes per second, suffix K, M or G allowed (default 0: no limit)",
            "  -h, --help         print this help and exit",
            "",
            "Exit status: 0 after a clean shutdown, 2 for a bad argument, 1 for any other failure.",
            "");

    private static final String NULL_PREFIX = "null:";

    Path image;
    /** A network disk's address (nbd://, nbd+unix://, rbd:), or null. */
    String network;
    /** Size of a null disk, or -1 when {@link #image} names a file. */
    long nullSizeBytes = -1;
    Path socket;
    int queues = 1;
    boolean readOnly;
    String serial = "vblk";
    /** The back end asked for, or null for the default (io_uring with fallback). */
    BackendKind aio;
    boolean direct = true;
    WaitStrategy wait = WaitStrategy.ADAPTIVE;
    long iopsLimit;
    long bpsLimit;
    /** Permission bits of the socket file. */
    int socketMode = SocketFile.DEFAULT_MODE;
    /** Group of the socket file (a name or a numeric gid), or null to leave the server's. */
    String socketGroup;
    /** The uids whose connections are served, or null for the default (own uid and root). */
    int[] allowUids;
    boolean help;
    /** The image format: named, never guessed. */
    io.vblk.block.ImageFormat format = io.vblk.block.ImageFormat.RAW;

    /**
     * Parses {@code args} (what follows {@code serve}).
     *
     * @throws UsageError naming the offending argument
     */
    static ServeOptions parse(String[] args) {
        ServeOptions o = new ServeOptions();
        String imageArg = null;
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            String name = arg;
            String value = null;
            int eq = arg.indexOf('=');
            if (arg.startsWith("--") && eq > 0) {
                name = arg.substring(0, eq);
                value = arg.substring(eq + 1);
            }
            switch (name) {
                case "-h", "--help" -> o.help = true;
                case "--read-only" -> {
                    if (value != null) {
                        throw new UsageError("--read-only takes no value");
                    }
                    o.readOnly = true;
                }
                case "--image", "--socket", "--queues", "--serial", "--aio", "--cache", "--wait", "--iops-limit", "--bps-limit",
                        "--socket-mode", "--socket-group", "--allow-uid", "--format" -> {
                    if (value == null) {
                        if (i + 1 >= args.length) {
                            throw new UsageError(name + " needs a value");
                        }
                        value = args[++i];
                    }
                    if (name.equals("--image")) {
                        imageArg = value;
                    } else {
                        o.set(name, value);
                    }
                }
                default -> throw new UsageError(arg.startsWith("-") ? "unknown option " + arg : "unexpected argument '" + arg + "'");
            }
        }
        if (o.help) {
            return o;
        }
        if (imageArg == null) {
            throw new UsageError("--image is required");
        }
        if (o.socket == null) {
            throw new UsageError("--socket is required");
        }
        o.setImage(imageArg);
        if (o.format != io.vblk.block.ImageFormat.RAW && o.image == null) {
            throw new UsageError("--format " + o.format + " needs an image file, not " + imageArg);
        }
        return o;
    }

    private void set(String name, String value) {
        switch (name) {
            case "--socket" -> {
                if (value.isEmpty()) {
                    throw new UsageError("--socket needs a path");
                }
                socket = Path.of(value);
            }
            case "--queues" -> queues = (int) number(name, value, 1, 64);
            case "--serial" -> {
                if (value.length() > 20 || !value.chars().allMatch(c -> c >= 0x20 && c < 0x7f)) {
                    throw new UsageError("--serial must be at most 20 printable ASCII characters: '" + value + "'");
                }
                serial = value;
            }
            case "--aio" -> {
                try {
                    aio = BackendKind.parse(value);
                } catch (IllegalArgumentException e) {
                    throw new UsageError("--aio: " + e.getMessage());
                }
            }
            case "--cache" -> {
                switch (value) {
                    case "none" -> direct = true;
                    case "writeback" -> direct = false;
                    default -> throw new UsageError("--cache must be none or writeback: '" + value + "'");
                }
            }
            case "--wait" -> {
                try {
                    wait = WaitStrategy.parse(value);
                } catch (IllegalArgumentException e) {
                    throw new UsageError("--wait: " + e.getMessage());
                }
            }
            case "--iops-limit" -> iopsLimit = number(name, value, 0, Long.MAX_VALUE);
            case "--bps-limit" -> bpsLimit = size(name, value, 0);
            case "--socket-mode" -> socketMode = octalMode(name, value);
            case "--socket-group" -> {
                if (value.isBlank()) {
                    throw new UsageError("--socket-group needs a group name or number");
                }
                socketGroup = value.trim();
            }
            case "--allow-uid" -> allowUids = uids(name, value);
            case "--format" -> {
                try {
                    format = io.vblk.block.ImageFormat.parse(value);
                } catch (IllegalArgumentException e) {
                    throw new UsageError("--format: " + e.getMessage());
                }
            }
            default -> throw new IllegalStateException(name);
        }
    }

    private void setImage(String value) {
        if (value.startsWith(NULL_PREFIX)) {
            nullSizeBytes = size("--image", value.substring(NULL_PREFIX.length()), 1);
            if (nullSizeBytes % 512 != 0) {
                throw new UsageError("--image " + value + ": the size must be a multiple of 512 bytes");
            }
            if (aio != null && aio != BackendKind.NULL) {
                throw new UsageError("--aio " + aio + " needs an image file, not " + value);
            }
            aio = BackendKind.NULL;
        } else if (io.vblk.block.NetworkDisk.isAddress(value)) {
            network = value;
        } else if (value.isEmpty()) {
            throw new UsageError("--image needs a path");
        } else {
            image = Path.of(value);
        }
    }

    /** What {@link #image} names, for messages. */
    String imageName() {
        if (network != null) {
            return network;
        }
        return image != null ? image.toString() : NULL_PREFIX + nullSizeBytes;
    }

    private static long number(String name, String value, long min, long max) {
        long n;
        try {
            n = Long.parseLong(value.trim());
        } catch (NumberFormatException e) {
            throw new UsageError(name + " expects a number, got '" + value + "'");
        }
        if (n < min || n > max) {
            throw new UsageError(name + " must be " + (max == Long.MAX_VALUE ? "at least " + min : min + " to " + max)
                    + ", got " + n);
        }
        return n;
    }

    /**
     * Permission bits in octal, at most 0777: set-id and sticky bits mean nothing on a socket, and
     * a mode the owner cannot write would lock the server's own user out.
     */
    private static int octalMode(String name, String value) {
        String v = value.trim();
        int mode;
        try {
            mode = Integer.parseInt(v, 8);
        } catch (NumberFormatException e) {
            throw new UsageError(name + " expects an octal mode such as 0600 or 660, got '" + value + "'");
        }
        if (mode < 0 || mode > 0777) {
            throw new UsageError(name + " must be 0 to 0777 (permission bits only), got '" + value + "'");
        }
        if ((mode & 0600) != 0600) {
            throw new UsageError(name + " " + value + " must keep read and write for the owner (0600)");
        }
        return mode;
    }

    /** A comma-separated list of numeric uids. */
    private static int[] uids(String name, String value) {
        String[] parts = value.split(",", -1);
        int[] out = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            out[i] = (int) number(name, parts[i], 0, 0xFFFF_FFFEL);
        }
        return out;
    }

    /** A byte count with an optional binary suffix K, M, G or T. */
    static long size(String name, String value, long min) {
        long bytes;
        try {
            bytes = ByteSize.parse(value);
        } catch (IllegalArgumentException e) {
            throw new UsageError(name + " expects a size such as 4096, 512K or 1G, got '" + value + "'");
        }
        if (bytes < min) {
            throw new UsageError(name + " must be at least " + min + ", got '" + value + "'");
        }
        return bytes;
    }
}
