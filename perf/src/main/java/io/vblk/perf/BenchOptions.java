package io.vblk.perf;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;

import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;
import picocli.CommandLine.TypeConversionException;

import io.vblk.aio.BackendKind;
import io.vblk.daemon.ByteSizeConverter;
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.WaitStrategy;
import io.vblk.perf.load.RwMode;

/**
 * The options of {@code vblk bench} (a picocli mixin of {@link BenchCommand}): parsed and
 * converted by picocli, then checked for range and consistency by {@link #check()}, which also
 * fills the derived fields the runs read. {@code --name value} and {@code --name=value} are both
 * accepted; list options take comma-separated values and every combination runs; a repeated
 * option replaces the earlier value. Every mistake is a {@link ParameterException} naming the
 * option and the value, reported on one line with exit status 2.
 */
final class BenchOptions {
    @Spec(Spec.Target.MIXEE)
    CommandSpec spec;

    // ------------------------------------------------------------------ workload

    @Option(names = "--rw", split = ",", paramLabel = "MODE", defaultValue = "randread", converter = RwConverter.class,
            description = "randread, randwrite, read, write, randrw (default ${DEFAULT-VALUE})")
    List<RwMode> rw;

    @Option(names = "--rwmixread", paramLabel = "PCT", defaultValue = "50",
            description = "percentage of reads in randrw (default ${DEFAULT-VALUE})")
    int readPercent;

    @Option(names = "--bs", split = ",", paramLabel = "SIZE", defaultValue = "4k", converter = ByteSizeConverter.class,
            description = "request size: 4k, 64k, 1m ... a multiple of 512 (default ${DEFAULT-VALUE})")
    List<Long> bs;

    @Option(names = "--iodepth", split = ",", paramLabel = "N", defaultValue = "32,128",
            description = "requests in flight per queue (with --rate: at most) (default ${DEFAULT-VALUE})")
    List<Integer> iodepth;

    @Option(names = "--queues", paramLabel = "N", defaultValue = "1",
            description = "virtqueues, all driven by one guest thread (default ${DEFAULT-VALUE})")
    int queues;

    @Option(names = "--runtime", paramLabel = "TIME", defaultValue = "5", converter = DurationConverter.class,
            description = "measured time per run: 5, 2.5s, 500ms (default ${DEFAULT-VALUE} s)")
    long runtimeNs;

    @Option(names = "--warmup", paramLabel = "TIME", defaultValue = "1", converter = DurationConverter.class,
            description = "unmeasured time before each run (default ${DEFAULT-VALUE} s)")
    long warmupNs;

    @Option(names = "--size", paramLabel = "BYTES", converter = ByteSizeConverter.class,
            description = "bytes of the device addressed, from offset 0 (default: all of it)")
    long sizeBytes;

    @Option(names = "--image", paramLabel = "PATH|null:SIZE|ADDRESS", description = {
        "a file or block device to use instead of the cached 1 GiB image; null:SIZE, a null device of SIZE bytes "
            + "(requests complete without any data); or a network disk: nbd://HOST[:PORT]/EXPORT, "
            + "nbd+unix:///EXPORT?socket=PATH, rbd:POOL/IMAGE[@SNAP][:conf=PATH] (embedded, or vhost-user with --daemon)"})
    String imageArg;

    @Option(names = "--format", paramLabel = "raw|qcow2", defaultValue = "raw",
            description = "the format of --image (default ${DEFAULT-VALUE}; never guessed): vblk serves a qcow2 image "
                    + "through its qcow2 driver, qemu-storage-daemon through driver=qcow2")
    String format;

    @Option(names = "--allow-writes", description = "permit write workloads on a user's --image or --socket (destroys data)")
    boolean allowWrites;

    @Option(names = {"--guest", "--frontend"}, paramLabel = "block|poll", defaultValue = "block",
            description = "how the guest waits for completions: sleep until interrupted (default; a call eventfd in vhost-user "
                    + "mode) or spin on the used ring")
    String guest;

    @Option(names = "--no-event-idx", description = "do not negotiate VIRTIO_F_RING_EVENT_IDX")
    boolean noEventIdx;

    @Option(names = "--indirect", description = "send each request as one indirect descriptor, as Linux guests do")
    boolean indirect;

    @Option(names = "--rate", paramLabel = "IOPS", description = {"open loop: issue IOPS requests a second in all (up to "
            + "--iodepth in flight per queue); latency counts from when each request was due, so a device that falls behind "
            + "shows it (coordinated omission corrected). Default: closed loop, every slot always in flight"})
    long rateIops;

    // ------------------------------------------------------------------ transport

    @Option(names = "--mode", paramLabel = "MODE", defaultValue = "embedded", description = {"embedded (default): vblk's engine "
            + "in this JVM, a thread acting as guest; vhost-user: this process is the frontend and guest of a vhost-user-blk "
            + "backend; baseline: data plane off (one lock, blocking pread/pwrite on the kicking thread, one request at a time)"})
    String mode;

    @Option(names = "--socket", paramLabel = "PATH",
            description = "vhost-user: the backend's socket (default: start a backend, see --daemon)")
    Path socket;

    @Option(names = "--backend-pid", paramLabel = "PID", defaultValue = "-1",
            description = "vhost-user: the backend process whose CPU is metered (default: the socket's peer)")
    long backendPid;

    @Option(names = "--daemon", paramLabel = "vblk|qsd", defaultValue = "vblk",
            description = "vhost-user without --socket: start vblk serve (default) or qemu-storage-daemon on the image")
    String daemon;

    @Option(names = "--serve-cmd", paramLabel = "CMD",
            description = "how to run vblk serve (default: java -jar daemon/target/vblk.jar serve)")
    String serveCommand;

    // ------------------------------------------------------------------ engine

    @Option(names = "--backend", split = ",", paramLabel = "NAME", defaultValue = "io_uring", converter = BackendConverter.class,
            description = "io_uring, linux-aio, threads, null (default ${DEFAULT-VALUE})")
    List<BackendKind> backends;

    @Option(names = "--wait", split = ",", paramLabel = "NAME", defaultValue = "adaptive", converter = WaitConverter.class,
            description = "adaptive, blocking, sleeping, yielding, busy-spin (default ${DEFAULT-VALUE})")
    List<WaitStrategy> waits;

    @Option(names = "--threading", split = ",", paramLabel = "NAME", defaultValue = "shared", converter = ThreadingConverter.class,
            description = "shared, dedicated (default ${DEFAULT-VALUE}; embedded only)")
    List<ThreadingMode> threadings;

    @Option(names = "--io-threads", paramLabel = "N", defaultValue = "1",
            description = "I/O threads the queues are spread over (default ${DEFAULT-VALUE}; embedded only)")
    int ioThreads;

    @Option(names = "--dirty-log",
            description = "log every device write into a dirty bitmap, as during a live migration (embedded only)")
    boolean dirtyLog;

    // ------------------------------------------------------------------ comparison

    @Option(names = "--compare", description = {"data plane on/off, vblk/fio, vblk serve/qemu-storage-daemon (file and null, "
            + "depth 1 and 128, guest blocking and polling), wait strategies; about 8 minutes with the defaults"})
    boolean compare;

    @Option(names = "--contention", description = {"with --compare: add the contention rows (vblk serve vs qemu-storage-daemon "
            + "with its default iothread and with poll-max-ns=0, null device, depth 128/1 polling and depth 1 blocking, "
            + "idle and with 1 and 2 competing busy processes): 27 x (--best-of + 1 warm-up) runs, about 9 minutes more"})
    boolean contention;

    @Option(names = "--only", split = ",", paramLabel = "GROUP", defaultValue = "dataplane,fio,vhost,wait",
            description = "groups to run: dataplane, fio, vhost, wait, contention (default ${DEFAULT-VALUE})")
    List<String> only;

    @Option(names = "--rounds", paramLabel = "N", defaultValue = "2",
            description = "rounds per group; contenders alternate, order reversed each round, rounds merged (default ${DEFAULT-VALUE})")
    int rounds;

    @Option(names = "--best-of", paramLabel = "N", defaultValue = "2",
            description = "contention rows: repeats per cell, order rotated each repeat, the best kept (default ${DEFAULT-VALUE})")
    int bestOf;

    @Option(names = "--contention-cell", split = ",", paramLabel = "ROW:BUSY", description = {"contention rows: run only "
            + "these cells (ROW qd128-poll, qd1-poll or qd1-block; BUSY 0, 1 or 2; e.g. qd1-block:2), so one cell can be "
            + "run again and again (default: every cell)"})
    List<String> contentionCells = new java.util.ArrayList<>();

    @Option(names = "--vhost-cell", split = ",", paramLabel = "KEY", description = {"vhost rows: run only these cells "
            + "(file|null-qd128|qd1-block|poll, e.g. null-qd128-block), so one row can be run again and again (default: every cell)"})
    List<String> vhostCells = new java.util.ArrayList<>();

    @Option(names = "--no-cell-warmup", negatable = false, description = {"contention rows: skip each cell's unmeasured "
            + "run of its own workload per backend before the measured repeats (the harness before 2026-12-06, for A/B; "
            + "the depth-128 warm-up at the start still runs)"})
    boolean noCellWarmup;

    @Option(names = "--serve-cmd-b", paramLabel = "CMD", description = {"contention rows: a second vblk serve (another build, "
            + "e.g. java -jar OTHER/daemon/target/vblk.jar serve) measured as vblk-b in the same cells, alternating with the "
            + "others, so two builds meet the same load"})
    String serveCommandB;

    @Option(names = "--blocking-eventfds", description = {"vhost-user: give the backend blocking kick/call eventfds "
            + "(default: non-blocking, as QEMU and Cloud Hypervisor create them)"})
    boolean blockingEventFds;

    @Option(names = "--guest-publish", paramLabel = "each|pass", defaultValue = "pass", description = {"how the guest "
            + "exposes the requests it issues: each (an avail.idx store per request, as Linux's virtqueue_add_split) or pass "
            + "(one store per pass over its queues); kicks are decided once per pass either way (default ${DEFAULT-VALUE})"})
    String guestPublish;

    @Option(names = "--fio-batch", paramLabel = "N", defaultValue = "32",
            description = "fio's iodepth_batch_submit / _complete_max (default ${DEFAULT-VALUE})")
    int fioBatch;

    @Option(names = "--qsd-poll-max-ns", paramLabel = "N", defaultValue = "0",
            description = "qemu-storage-daemon iothread poll-max-ns in the vhost group (default ${DEFAULT-VALUE}; -1: its default)")
    long qsdPollMaxNs;

    // ------------------------------------------------------------------ output

    @Option(names = "--json", paramLabel = "FILE", description = "every result and comparison as JSON")
    Path json;

    @Option(names = "--markdown", paramLabel = "FILE",
            description = "the tables in Markdown with date, machine, command and load (for the README)")
    Path markdown;

    @Option(names = "--hgrm", paramLabel = "DIR", description = "an HdrHistogram percentile file per result (microseconds)")
    Path hgrm;

    @Option(names = "--svg", paramLabel = "FILE", description = "latency-percentile chart of the runs, for a browser")
    Path svg;

    @Option(names = "--quiet", description = "no progress line")
    boolean quiet;

    // ------------------------------------------------------------------ derived by check()

    List<Integer> blockSizes;
    List<Integer> depths;
    boolean guestPolls;
    boolean eventIdx;
    /** The file or device of --image, or null. */
    Path image;
    /** A network disk's address (nbd://, nbd+unix://, rbd:) given as --image, or null. */
    String network;
    /** The size of --image null:SIZE, or -1. */
    long nullImageBytes = -1;

    private static final List<String> WORKLOAD_OPTIONS = List.of("--rw", "--rwmixread", "--bs", "--iodepth", "--queues",
            "--mode", "--socket", "--backend-pid", "--daemon", "--threading", "--io-threads", "--wait", "--guest", "--size",
            "--no-event-idx", "--indirect", "--dirty-log", "--allow-writes", "--rate");

    /** A usage error about {@code message}: one line, exit status 2. */
    ParameterException usageError(String message) {
        return new ParameterException(spec.commandLine(), message);
    }

    private boolean given(String name) {
        return spec.commandLine().getParseResult() != null && spec.commandLine().getParseResult().hasMatchedOption(name);
    }

    /**
     * Checks ranges and combinations and fills the derived fields.
     *
     * @throws ParameterException naming the offending option and value
     */
    void check() {
        range("--rwmixread", readPercent, 0, 100);
        range("--queues", queues, 1, 64);
        range("--io-threads", ioThreads, 1, 64);
        range("--rounds", rounds, 1, 100);
        range("--best-of", bestOf, 1, 100);
        range("--fio-batch", fioBatch, 1, 4096);
        range("--qsd-poll-max-ns", qsdPollMaxNs, -1, Integer.MAX_VALUE);
        if (given("--rate")) {
            range("--rate", rateIops, 1, 1_000_000_000L);
        }
        if (given("--backend-pid")) {
            range("--backend-pid", backendPid, 1, Integer.MAX_VALUE);
        }
        if (given("--size") && sizeBytes < 4096) {
            throw usageError("--size must be at least 4096 bytes, got " + sizeBytes);
        }
        if (runtimeNs < 1_000_000L) {
            throw usageError("--runtime must be between 1 ms and a day, got " + runtimeNs / 1e9 + " s");
        }
        List<Integer> sizes = new ArrayList<>();
        for (long b : new LinkedHashSet<>(bs)) {
            if (b < 512 || b % 512 != 0 || b > (64L << 20)) {
                throw usageError("--bs must be a multiple of 512 up to 64m, got " + b);
            }
            sizes.add((int) b);
        }
        blockSizes = List.copyOf(sizes);
        for (int d : iodepth) {
            range("--iodepth", d, 1, 4096);
        }
        depths = List.copyOf(new LinkedHashSet<>(iodepth));
        rw = List.copyOf(new LinkedHashSet<>(rw));
        backends = List.copyOf(new LinkedHashSet<>(backends));
        waits = List.copyOf(new LinkedHashSet<>(waits));
        threadings = List.copyOf(new LinkedHashSet<>(threadings));
        for (String group : only) {
            choice("--only", group, "dataplane", "fio", "vhost", "wait", "contention");
        }
        LinkedHashSet<String> groups = new LinkedHashSet<>(only);
        if (contention) {
            groups.add("contention");
        }
        only = List.copyOf(groups);
        guestPolls = choice(given("--frontend") && !given("--guest") ? "--frontend" : "--guest", guest, "block", "poll").equals("poll");
        mode = choice("--mode", mode, "embedded", "vhost-user", "baseline");
        daemon = choice("--daemon", daemon, "vblk", "qsd");
        format = choice("--format", format, "raw", "qcow2");
        eventIdx = !noEventIdx;
        for (Path p : new Path[] {socket, json, markdown, hgrm, svg}) {
            if (p != null && p.toString().isBlank()) {
                throw usageError("a path option needs a path, got ''");
            }
        }
        if (imageArg != null) {
            image(imageArg);
        }
        combinations();
    }

    private void image(String value) {
        if (io.vblk.block.NetworkDisk.isAddress(value)) {
            network = value;
        } else if (value.startsWith("null:")) {
            try {
                nullImageBytes = ByteSizeConverter.parse(value.substring("null:".length()));
            } catch (IllegalArgumentException e) {
                throw usageError("--image " + value + ": " + e.getMessage());
            }
            if (nullImageBytes < 4096 || nullImageBytes % 4096 != 0) {
                throw usageError("--image " + value + ": the size must be a positive multiple of 4096 bytes");
            }
        } else if (value.isBlank()) {
            throw usageError("--image needs a path, null:SIZE or a network address");
        } else {
            image = Path.of(value);
        }
    }

    private void combinations() {
        if (compare) {
            for (String o : WORKLOAD_OPTIONS) {
                if (given(o)) {
                    throw usageError(o + " cannot be combined with --compare (the comparison fixes the workloads)");
                }
            }
            if (backends.size() != 1 || backends.get(0) == BackendKind.NULL) {
                throw usageError("--compare takes one file back end in --backend (io_uring, linux-aio or threads)");
            }
            if (nullImageBytes >= 0 || network != null) {
                throw usageError("--compare needs a file or block device in --image (it adds the null device itself)");
            }
        } else if (contention) {
            throw usageError("--contention adds rows to --compare: give --compare too");
        }
        for (String cell : contentionCells) {
            if (!ContentionGroup.isCell(cell)) {
                throw usageError("--contention-cell " + cell + ": expected ROW:BUSY, ROW qd128-poll, qd1-poll or qd1-block, BUSY 0, 1 or 2");
            }
        }
        if (!contentionCells.isEmpty() && (!compare || !only.contains("contention"))) {
            throw usageError("--contention-cell is for the contention rows: give --compare --contention (or --only contention)");
        }
        if (!"each".equals(guestPublish) && !"pass".equals(guestPublish)) {
            throw usageError("--guest-publish " + guestPublish + ": expected each or pass");
        }
        for (String cell : vhostCells) {
            if (!cell.matches("(file|null)-qd(128|1)-(block|poll)")) {
                throw usageError("--vhost-cell " + cell + ": expected (file or null)-(qd128 or qd1)-(block or poll), e.g. null-qd128-block");
            }
        }
        if (!vhostCells.isEmpty() && (!compare || !only.contains("vhost"))) {
            throw usageError("--vhost-cell is for the vhost rows: give --compare (with the vhost group)");
        }
        if (serveCommandB != null && (!compare || !only.contains("contention"))) {
            throw usageError("--serve-cmd-b is for the contention rows: give --compare --contention (or --only contention)");
        }
        for (String o : List.of("--socket", "--backend-pid", "--daemon")) {
            if (given(o) && !"vhost-user".equals(mode)) {
                throw usageError(o + " needs --mode vhost-user");
            }
        }
        if (given("--daemon") && socket != null) {
            throw usageError("--daemon starts a backend; --socket uses a running one: give one of them");
        }
        if (given("--backend-pid") && socket == null) {
            throw usageError("--backend-pid needs --socket (a backend started here is metered anyway)");
        }
        for (int b : blockSizes) {
            for (int d : depths) {
                if ((long) b * d * queues > (4L << 30)) {
                    throw usageError("--bs " + b + " x --iodepth " + d + " x --queues " + queues + " needs more than 4 GiB of guest memory");
                }
            }
        }
        boolean writes = rw.stream().anyMatch(RwMode::writes);
        if (writes && !allowWrites && ((image != null && !compare) || socket != null || network != null)) {
            throw usageError("the workload writes to " + (socket != null ? "the backend at " + socket : image != null ? image : network)
                    + ", destroying its data: add --allow-writes");
        }
    }

    private void range(String name, long value, long min, long max) {
        if (value < min || value > max) {
            throw usageError(name + " must be " + min + " to " + max + ", got " + value);
        }
    }

    private String choice(String name, String value, String... choices) {
        for (String c : choices) {
            if (c.equals(value.trim())) {
                return c;
            }
        }
        throw usageError(name + " must be " + String.join(", ", choices).replaceFirst(", ([^,]*)$", " or $1") + ", got '" + value + "'");
    }

    // ------------------------------------------------------------------ converters

    /** A parser that throws IllegalArgumentException with a message for people, as a picocli converter. */
    private abstract static class Parsed<T> implements ITypeConverter<T> {
        abstract T parse(String value);

        @Override
        public final T convert(String value) {
            try {
                return parse(value);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }

    static final class RwConverter extends Parsed<RwMode> {
        @Override
        RwMode parse(String value) {
            return RwMode.parse(value);
        }
    }

    static final class BackendConverter extends Parsed<BackendKind> {
        @Override
        BackendKind parse(String value) {
            return BackendKind.parse(value);
        }
    }

    static final class WaitConverter extends Parsed<WaitStrategy> {
        @Override
        WaitStrategy parse(String value) {
            return WaitStrategy.parse(value);
        }
    }

    static final class ThreadingConverter extends Parsed<ThreadingMode> {
        @Override
        ThreadingMode parse(String value) {
            return ThreadingMode.parse(value);
        }
    }

    /** A duration in nanoseconds: seconds (decimal allowed), or with suffix s or ms; at most a day. */
    static final class DurationConverter extends Parsed<Long> {
        @Override
        Long parse(String value) {
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
                throw new IllegalArgumentException("expected a time such as 5, 2.5s or 500ms, got '" + value + "'");
            }
            if (Double.isNaN(d) || d < 0 || d * scale > 86_400e9) {
                throw new IllegalArgumentException("expected a time from 0 to a day, got '" + value + "'");
            }
            return (long) (d * scale);
        }
    }
}
