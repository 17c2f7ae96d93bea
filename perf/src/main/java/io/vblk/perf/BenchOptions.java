package io.vblk.perf;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.Function;

import picocli.CommandLine;

import io.vblk.aio.BackendKind;
import io.vblk.engine.ByteSize;
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.WaitStrategy;
import io.vblk.perf.load.RwMode;

/**
 * The options of {@code vblk bench}, parsed and checked for form. {@code --name value} and
 * {@code --name=value} are both accepted; list options take comma-separated values and every
 * combination runs.
 */
final class BenchOptions {
    static final String USAGE = String.join("\n",
            "Usage: vblk bench [options]             a short default profile, or the workload the options give",
            "       vblk bench --compare [options]   vblk against its contenders, alternating them",
            "",
            "With no options: vblk embedded in this JVM, io_uring, 4 KiB random reads at depth 32 and 128,",
            "5 s each, on a 1 GiB image in /var/tmp that is created, written full of data and cached.",
            "",
            "Workload (list options take a,b,c and run every combination):",
            "  --rw LIST            randread, randwrite, read, write, randrw (default randread)",
            "  --rwmixread PCT      percentage of reads in randrw (default 50)",
            "  --bs LIST            request size: 4k, 64k, 1m ... a multiple of 512 (default 4k)",
            "  --iodepth LIST       requests in flight per queue (with --rate: at most) (default 32,128)",
            "  --queues N           virtqueues, all driven by one guest thread (default 1)",
            "  --runtime TIME       measured time per run: 5, 2.5s, 500ms (default 5 s)",
            "  --warmup TIME        unmeasured time before each run (default 1 s)",
            "  --size BYTES         bytes of the device addressed, from offset 0 (default: all of it)",
            "  --image PATH         a file or block device to use instead of the cached 1 GiB image",
            "  --image null:SIZE    a null device of SIZE bytes: requests complete without any data",
            "  --image ADDRESS      a network disk: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,",
            "                       rbd:POOL/IMAGE[@SNAP][:conf=PATH] (embedded, or vhost-user with --daemon)",
            "  --format raw|qcow2   the format of --image (default raw; never guessed): vblk serves a qcow2",
            "                       image through its qcow2 driver, qemu-storage-daemon through driver=qcow2",
            "  --allow-writes       permit write workloads on a user's --image or --socket (destroys data)",
            "  --guest block|poll   how the guest waits for completions: sleep until interrupted",
            "                       (default; a call eventfd in vhost-user mode) or spin on the used ring",
            "  --no-event-idx       do not negotiate VIRTIO_F_RING_EVENT_IDX",
            "  --indirect           send each request as one indirect descriptor, as Linux guests do",
            "  --rate IOPS          open loop: issue IOPS requests a second in all (up to --iodepth in flight",
            "                       per queue); latency counts from when each request was due, so a device",
            "                       that falls behind shows it (coordinated omission corrected). Default:",
            "                       closed loop, every slot always in flight",
            "",
            "Transport:",
            "  --mode MODE          embedded (default): vblk's engine in this JVM, a thread acting as guest;",
            "                       vhost-user: this process is the frontend and guest of a vhost-user-blk",
            "                       backend; baseline: data plane off (one lock, blocking pread/pwrite on",
            "                       the kicking thread, one request at a time)",
            "  --socket PATH        vhost-user: the backend's socket (default: start a backend, see --daemon)",
            "  --backend-pid PID    vhost-user: the backend process whose CPU is metered (default: the",
            "                       socket's peer)",
            "  --daemon vblk|qsd    vhost-user without --socket: start vblk serve (default) or",
            "                       qemu-storage-daemon on the image",
            "  --serve-cmd CMD      how to run vblk serve (default: java -jar daemon/target/vblk.jar serve)",
            "",
            "Engine (embedded, and vblk serve when started here):",
            "  --backend LIST       io_uring, linux-aio, threads, null (default io_uring)",
            "  --wait LIST          adaptive, blocking, sleeping, yielding, busy-spin (default adaptive)",
            "  --threading LIST     shared, dedicated (default shared; embedded only)",
            "  --io-threads N       I/O threads the queues are spread over (default 1; embedded only)",
            "  --dirty-log          log every device write into a dirty bitmap, as during a live",
            "                       migration (embedded only)",
            "",
            "Comparison:",
            "  --compare            data plane on/off, vblk/fio, vblk serve/qemu-storage-daemon (file and",
            "                       null, depth 1 and 128, guest blocking and polling), wait strategies;",
            "                       about 8 minutes with the defaults",
            "  --only LIST          groups to run: dataplane, fio, vhost, wait (default all)",
            "  --rounds N           rounds per group; contenders alternate, order reversed each round",
            "                       (default 2)",
            "  --fio-batch N        fio's iodepth_batch_submit / _complete_max (default 32)",
            "  --qsd-poll-max-ns N  qemu-storage-daemon iothread poll-max-ns (default 0; -1: its default)",
            "",
            "Output:",
            "  --json FILE          every result and comparison as JSON",
            "  --markdown FILE      the tables in Markdown with date, machine, command and load (for the README)",
            "  --hgrm DIR           an HdrHistogram percentile file per result (microseconds)",
            "  --svg FILE           latency-percentile chart of the runs, for a browser",
            "  --quiet              no progress line",
            "  -h, --help           this help",
            "",
            "Exit status: 0 when every run completed, 1 when a run failed, 2 for a bad option.",
            "");

    List<RwMode> rw = List.of(RwMode.RANDREAD);
    int readPercent = 50;
    List<Integer> blockSizes = List.of(4096);
    List<Integer> depths = List.of(32, 128);
    int queues = 1;
    long runtimeNs = 5_000_000_000L;
    long warmupNs = 1_000_000_000L;
    long sizeBytes;
    Path image;
    /** A network disk's address (nbd://, nbd+unix://, rbd:) given as --image, or null. */
    String network;
    long nullImageBytes = -1;
    boolean allowWrites;
    boolean guestPolls;
    boolean eventIdx = true;
    boolean indirect;
    boolean dirtyLog;
    long rateIops;
    String mode = "embedded";
    Path socket;
    long backendPid = -1;
    String daemon = "vblk";
    String format = "raw";
    String serveCommand;
    List<BackendKind> backends = List.of(BackendKind.IO_URING);
    List<WaitStrategy> waits = List.of(WaitStrategy.ADAPTIVE);
    List<ThreadingMode> threadings = List.of(ThreadingMode.SHARED);
    int ioThreads = 1;
    boolean compare;
    List<String> only = List.of("dataplane", "fio", "vhost", "wait");
    int rounds = 2;
    int fioBatch = 32;
    long qsdPollMaxNs;
    Path json;
    Path markdown;
    Path hgrm;
    Path svg;
    boolean quiet;
    boolean help;
    /** Options given, for the conflicts check. */
    private final List<String> given = new ArrayList<>();

    private static final List<String> VALUE_OPTIONS = List.of("--rw", "--rwmixread", "--bs", "--iodepth", "--queues", "--runtime",
            "--warmup", "--size", "--rate", "--image", "--format", "--guest", "--frontend", "--mode", "--socket", "--backend-pid", "--daemon", "--serve-cmd",
            "--backend", "--wait", "--threading", "--io-threads", "--only", "--rounds", "--fio-batch", "--qsd-poll-max-ns", "--json",
            "--markdown", "--hgrm", "--svg");
    private static final List<String> WORKLOAD_OPTIONS = List.of("--rw", "--rwmixread", "--bs", "--iodepth", "--queues",
            "--mode", "--socket", "--backend-pid", "--daemon", "--threading", "--io-threads", "--wait", "--guest", "--size",
            "--no-event-idx", "--indirect", "--dirty-log", "--allow-writes", "--rate");

    /**
     * Parses {@code args}.
     *
     * @throws UsageError naming the offending argument
     */
    static BenchOptions parse(String[] args) {
        BenchOptions o = new BenchOptions();
        CommandLine.ParseResult parsed;
        try {
            parsed = new CommandLine(SPEC).parseArgs(args);
        } catch (CommandLine.ParameterException e) {
            throw new UsageError(e.getMessage());
        }
        // In the order given: a later --image replaces an earlier one, as before.
        for (CommandLine.Model.OptionSpec option : parsed.matchedOptions()) {
            String name = option.longestName();
            for (String value : option.stringValues()) {
                if (isFlag(name) || isFlag(option.shortestName())) {
                    o.flag(option.shortestName().equals("-h") ? "--help" : name);
                } else {
                    o.set(name, value);
                }
            }
            if (option.stringValues().isEmpty() && (isFlag(name) || isFlag(option.shortestName()))) {
                o.flag(option.shortestName().equals("-h") ? "--help" : name);
            }
            o.given.add(name);
        }
        o.check();
        return o;
    }

    /**
     * The command-line grammar, for picocli: every option of {@link #USAGE}, values kept as text
     * and checked by {@link #set}, so each message names the option and the value at fault.
     */
    private static final CommandLine.Model.CommandSpec SPEC = spec();

    private static CommandLine.Model.CommandSpec spec() {
        CommandLine.Model.CommandSpec spec = CommandLine.Model.CommandSpec.create().name("vblk bench");
        for (String name : VALUE_OPTIONS) {
            spec.addOption(CommandLine.Model.OptionSpec.builder(name).arity("1").type(String.class).build());
        }
        for (String name : List.of("--allow-writes", "--no-event-idx", "--indirect", "--compare", "--quiet")) {
            spec.addOption(CommandLine.Model.OptionSpec.builder(name).arity("0").type(boolean.class).build());
        }
        spec.addOption(CommandLine.Model.OptionSpec.builder("-h", "--help").arity("0").type(boolean.class).build());
        return spec;
    }

    private static boolean isFlag(String name) {
        switch (name) {
            case "-h": case "--help": case "--allow-writes": case "--no-event-idx": case "--indirect": case "--dirty-log": case "--compare":
            case "--quiet":
                return true;
            default:
                return false;
        }
    }

    private void flag(String name) {
        switch (name) {
            case "-h": case "--help": help = true; break;
            case "--allow-writes": allowWrites = true; break;
            case "--no-event-idx": eventIdx = false; break;
            case "--indirect": indirect = true; break;
            case "--dirty-log": dirtyLog = true; break;
            case "--compare": compare = true; break;
            case "--quiet": quiet = true; break;
            default: throw new IllegalStateException(name);
        }
    }

    private void set(String name, String value) {
        switch (name) {
            case "--rw": rw = list(name, value, RwMode::parse); break;
            case "--rwmixread": readPercent = (int) number(name, value, 0, 100); break;
            case "--bs": blockSizes = list(name, value, v -> blockSize(name, v)); break;
            case "--iodepth": depths = list(name, value, v -> (int) number(name, v, 1, 4096)); break;
            case "--queues": queues = (int) number(name, value, 1, 64); break;
            case "--runtime": runtimeNs = duration(name, value, 1_000_000L); break;
            case "--warmup": warmupNs = duration(name, value, 0); break;
            case "--size": sizeBytes = size(name, value, 4096); break;
            case "--rate": rateIops = number(name, value, 1, 1_000_000_000L); break;
            case "--image": image(value); break;
            case "--guest": case "--frontend": guestPolls = choice(name, value, "block", "poll").equals("poll"); break;
            case "--mode": mode = choice(name, value, "embedded", "vhost-user", "baseline"); break;
            case "--socket": socket = nonEmptyPath(name, value); break;
            case "--backend-pid": backendPid = number(name, value, 1, Integer.MAX_VALUE); break;
            case "--daemon": daemon = choice(name, value, "vblk", "qsd"); break;
            case "--format": format = choice(name, value, "raw", "qcow2"); break;
            case "--serve-cmd": serveCommand = value; break;
            case "--backend": backends = list(name, value, BackendKind::parse); break;
            case "--wait": waits = list(name, value, WaitStrategy::parse); break;
            case "--threading": threadings = list(name, value, ThreadingMode::parse); break;
            case "--io-threads": ioThreads = (int) number(name, value, 1, 64); break;
            case "--only": only = list(name, value, v -> choice(name, v, "dataplane", "fio", "vhost", "wait")); break;
            case "--rounds": rounds = (int) number(name, value, 1, 100); break;
            case "--fio-batch": fioBatch = (int) number(name, value, 1, 4096); break;
            case "--qsd-poll-max-ns": qsdPollMaxNs = number(name, value, -1, Integer.MAX_VALUE); break;
            case "--json": json = nonEmptyPath(name, value); break;
            case "--markdown": markdown = nonEmptyPath(name, value); break;
            case "--hgrm": hgrm = nonEmptyPath(name, value); break;
            case "--svg": svg = nonEmptyPath(name, value); break;
            default: throw new UsageError("unknown option " + name);
        }
    }

    private void image(String value) {
        if (io.vblk.block.NetworkDisk.isAddress(value)) {
            network = value;
            image = null;
            nullImageBytes = -1;
        } else if (value.startsWith("null:")) {
            nullImageBytes = size("--image", value.substring("null:".length()), 4096);
            if (nullImageBytes % 4096 != 0) {
                throw new UsageError("--image " + value + ": the size must be a multiple of 4096 bytes");
            }
            image = null;
        } else {
            image = nonEmptyPath("--image", value);
            nullImageBytes = -1;
        }
    }

    private void check() {
        if (help) {
            return;
        }
        if (compare) {
            for (String o : WORKLOAD_OPTIONS) {
                if (given.contains(o)) {
                    throw new UsageError(o + " cannot be combined with --compare (the comparison fixes the workloads)");
                }
            }
            if (backends.size() != 1 || backends.get(0) == BackendKind.NULL) {
                throw new UsageError("--compare takes one file back end in --backend (io_uring, linux-aio or threads)");
            }
            if (nullImageBytes >= 0 || network != null) {
                throw new UsageError("--compare needs a file or block device in --image (it adds the null device itself)");
            }
        }
        for (String o : List.of("--socket", "--backend-pid", "--daemon")) {
            if (given.contains(o) && !"vhost-user".equals(mode)) {
                throw new UsageError(o + " needs --mode vhost-user");
            }
        }
        if (given.contains("--daemon") && socket != null) {
            throw new UsageError("--daemon starts a backend; --socket uses a running one: give one of them");
        }
        if (given.contains("--backend-pid") && socket == null) {
            throw new UsageError("--backend-pid needs --socket (a backend started here is metered anyway)");
        }
        for (int bs : blockSizes) {
            for (int d : depths) {
                if ((long) bs * d * queues > (4L << 30)) {
                    throw new UsageError("--bs " + bs + " x --iodepth " + d + " x --queues " + queues
                            + " needs more than 4 GiB of guest memory");
                }
            }
        }
        boolean writes = rw.stream().anyMatch(RwMode::writes);
        if (writes && !allowWrites && ((image != null && !compare) || socket != null || network != null)) {
            throw new UsageError("the workload writes to " + (socket != null ? "the backend at " + socket : image != null ? image : network)
                    + ", destroying its data: add --allow-writes");
        }
    }

    // ------------------------------------------------------------------ value parsers

    private static <T> List<T> list(String name, String value, Function<String, T> parser) {
        List<T> out = new ArrayList<>();
        for (String part : value.split(",")) {
            if (part.isBlank()) {
                throw new UsageError(name + " has an empty item: '" + value + "'");
            }
            try {
                T v = parser.apply(part.trim());
                if (!out.contains(v)) {
                    out.add(v);
                }
            } catch (UsageError e) {
                throw e;
            } catch (IllegalArgumentException e) {
                throw new UsageError(name + " expects a size such as 4096, 512K or 1G, got '" + value + "'");
            }
        }
        return List.copyOf(out);
    }

    private static String choice(String name, String value, String... choices) {
        for (String c : choices) {
            if (c.equals(value.trim())) {
                return c;
            }
        }
        throw new UsageError(name + " must be " + String.join(", ", choices).replaceFirst(", ([^,]*)$", " or $1") + ", got '" + value + "'");
    }

    private static Path nonEmptyPath(String name, String value) {
        if (value.isBlank()) {
            throw new UsageError(name + " needs a path");
        }
        return Path.of(value);
    }

    static long number(String name, String value, long min, long max) {
        long n;
        try {
            n = Long.parseLong(value.trim());
        } catch (NumberFormatException e) {
            throw new UsageError(name + " expects a whole number, got '" + value + "'");
        }
        if (n < min || n > max) {
            throw new UsageError(name + " must be " + min + " to " + max + ", got " + n);
        }
        return n;
    }

    private static int blockSize(String name, String value) {
        long bs = size(name, value, 512);
        if (bs % 512 != 0 || bs > (64L << 20)) {
            throw new UsageError(name + " must be a multiple of 512 up to 64m, got '" + value + "'");
        }
        return (int) bs;
    }

    /** A byte count with an optional binary suffix k, m, g or t (optionally followed by b or ib). */
    static long size(String name, String value, long min) {
        long bytes;
        try {
            bytes = ByteSize.parse(value);
        } catch (IllegalArgumentException e) {
            throw new UsageError(name + " expects a size such as 4096, 512K or 1G, got '" + value + "'");
        }
        if (bytes < min) {
            throw new UsageError(name + " must be at least " + min + " bytes, got '" + value + "'");
        }
        return bytes;
    }

    /** A duration: seconds (decimal allowed), or with suffix s or ms. */
    static long duration(String name, String value, long minNs) {
        String v = value.trim().toLowerCase(Locale.ROOT);
        double scale = 1e9;
        if (v.endsWith("ms")) {
            scale = 1e6;
            v = v.substring(0, v.length() - 2);
        } else if (v.endsWith("s")) {
            v = v.substring(0, v.length() - 1);
        }
        double d;
        try {
            d = Double.parseDouble(v);
        } catch (NumberFormatException e) {
            throw new UsageError(name + " expects a time such as 5, 2.5s or 500ms, got '" + value + "'");
        }
        if (Double.isNaN(d) || d * scale < minNs || d * scale > 86_400e9) {
            throw new UsageError(name + " must be between " + minNs / 1e6 + " ms and a day, got '" + value + "'");
        }
        return (long) (d * scale);
    }
}
