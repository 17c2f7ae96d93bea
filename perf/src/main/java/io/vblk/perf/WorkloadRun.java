package io.vblk.perf;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import io.vblk.aio.BackendKind;
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.WaitStrategy;
import io.vblk.perf.baseline.BaselineContender;
import io.vblk.perf.engine.EmbeddedContender;
import io.vblk.perf.load.Contender;
import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.load.RwMode;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.ResultTable;
import io.vblk.perf.vhost.BackendDaemon;
import io.vblk.perf.vhost.ServeCommand;
import io.vblk.perf.vhost.VhostUserContender;

/**
 * {@code vblk bench} without {@code --compare}: every combination of the options' lists, one
 * run each, a table row as each finishes.
 */
final class WorkloadRun {
    private final BenchOptions o;
    private final PrintStream out;
    private final PrintStream err;
    private final Outputs outputs;
    private final Progress progress;
    private ResultTable table;

    WorkloadRun(BenchOptions options, List<String> args, PrintStream out, PrintStream err) {
        this.o = options;
        this.out = out;
        this.err = err;
        double load = Machine.load();
        this.outputs = new Outputs(options, args, load);
        this.progress = new Progress(err, !options.quiet);
        Outputs.header(out, args, load);
    }

    /** Runs everything; returns the exit status. */
    int run() throws Exception {
        table = new ResultTable(out, nameWidth());
        DiskSpec disk = disk();
        out.printf(Locale.ROOT, "device      %s; %s, guest %s%s%s, %s; %.1f s per run after %.1f s warm-up%n%n",
                o.socket != null ? "behind " + o.socket : disk.describe(), o.mode, o.guestPolls ? "polls" : "sleeps until interrupted",
                o.eventIdx ? ", EVENT_IDX" : "", o.indirect ? ", indirect" : "",
                o.rateIops > 0 ? "open loop at " + o.rateIops + " IOPS (latency from when each request was due)" : "closed loop",
                o.runtimeNs / 1e9, o.warmupNs / 1e9);
        table.header();
        switch (o.mode) {
            case "embedded":
                for (BackendKind b : o.backends) {
                    for (WaitStrategy wait : o.waits) {
                        for (ThreadingMode t : o.threadings) {
                            String name = "embedded-" + b.cliName() + "-" + wait.cliName()
                                    + (o.threadings.size() > 1 || t != ThreadingMode.SHARED ? "-" + t.name().toLowerCase(Locale.ROOT) : "");
                            runAll(name + (o.dirtyLog ? "-dirty-log" : ""),
                                    new EmbeddedContender(disk, b, wait, t, o.ioThreads).dirtyLog(o.dirtyLog));
                        }
                    }
                }
                break;
            case "baseline":
                if (disk.isQcow2()) {
                    throw o.usageError("--mode baseline reads the file as raw: it cannot serve --format qcow2");
                }
                runAll("baseline", new BaselineContender(disk));
                break;
            default:
                vhostUser(disk);
                break;
        }
        out.println();
        outputs.write(err, "vblk bench " + o.mode);
        return 0;
    }

    private void vhostUser(DiskSpec disk) throws Exception {
        if (o.socket != null) {
            runAll("vhost-user", new VhostUserContender(o.socket, "external", "?", "-", "behind " + o.socket, o.backendPid));
            return;
        }
        Path dir = Files.createTempDirectory("vblk-bench");
        try {
            if ("qsd".equals(o.daemon)) {
                for (BackendKind b : o.backends) {
                    String aio = b == BackendKind.LINUX_AIO ? "native" : "io_uring";
                    DiskSpec served = b == BackendKind.NULL && !disk.isNull() ? DiskSpec.nullDevice(capacity(disk)) : disk;
                    try (BackendDaemon d = BackendDaemon.qemuStorageDaemon(served, dir.resolve("qsd.sock"), aio, -1, o.queues,
                            o.rw.stream().anyMatch(RwMode::writes)).awaitReady()) {
                        runAll("qsd-" + (served.isNull() ? "null" : aio), new VhostUserContender(d.socket(), "qsd",
                                served.isNull() ? "null-co" : aio, "default", served.describe(), d.pid()));
                    }
                }
                return;
            }
            List<String> serve = ServeCommand.resolve(o.serveCommand);
            for (BackendKind b : o.backends) {
                for (WaitStrategy wait : o.waits) {
                    try (BackendDaemon d = BackendDaemon.vblkServe(serve, disk, dir.resolve("vblk.sock"), b.cliName(), wait.cliName(),
                            o.queues).awaitReady()) {
                        String backend = disk.isNull() ? "null" : b.cliName();
                        runAll("serve-" + backend + "-" + wait.cliName(), new VhostUserContender(d.socket(), "vblk-serve", backend,
                                wait.cliName(), disk.describe(), d.pid()));
                    }
                }
            }
        } finally {
            try (var files = Files.list(dir)) {
                for (Path p : (Iterable<Path>) files::iterator) {
                    Files.deleteIfExists(p);
                }
            }
            Files.deleteIfExists(dir);
        }
    }

    private void runAll(String prefix, Contender contender) throws Exception {
        for (RwMode rw : o.rw) {
            for (int bs : o.blockSizes) {
                for (int depth : o.depths) {
                    Workload w = new Workload(rw, o.readPercent, bs, depth, o.queues, o.sizeBytes, o.warmupNs, o.runtimeNs,
                            o.guestPolls, o.eventIdx, o.indirect, o.rateIops);
                    String name = prefix + "-" + rw + "-" + ResultTable.size(bs) + "-qd" + depth
                            + (o.queues > 1 ? "x" + o.queues : "") + (o.guestPolls ? "-poll" : "")
                            + (o.rateIops > 0 ? "-rate" + o.rateIops : "");
                    BenchResult r = contender.run(name, w, progress);
                    outputs.results.add(r);
                    table.row(r);
                    if (!o.quiet && !r.perIo().isEmpty()) {
                        err.println("  " + r.name() + " per I/O: " + r.perIoSummary());
                    }
                }
            }
        }
    }

    /** Wide enough for every name {@link #runAll} makes from these options. */
    private int nameWidth() {
        int prefix = "vhost-user".length();
        for (BackendKind b : o.backends) {
            for (WaitStrategy wait : o.waits) {
                for (ThreadingMode t : o.threadings) {
                    int threading = o.threadings.size() > 1 || t != ThreadingMode.SHARED ? 1 + t.name().length() : 0;
                    prefix = Math.max(prefix, "embedded-".length() + b.cliName().length() + 1 + wait.cliName().length() + threading);
                }
            }
        }
        int suffix = 0;
        for (RwMode rw : o.rw) {
            for (int bs : o.blockSizes) {
                for (int d : o.depths) {
                    suffix = Math.max(suffix, ("-" + rw + "-" + ResultTable.size(bs) + "-qd" + d + "x" + o.queues + "-poll-rate"
                            + o.rateIops).length());
                }
            }
        }
        return prefix + suffix;
    }

    private static long capacity(DiskSpec disk) throws java.io.IOException {
        if (disk.isNetwork()) {
            return io.vblk.block.NetworkDisk.open(disk.network(), true).sizeBytes();
        }
        return disk.isNull() ? disk.nullSizeBytes()
                : disk.isQcow2() ? io.vblk.block.qcow2.Qcow2.virtualSize(disk.path()) : Files.size(disk.path());
    }

    /** The device the options name: the user's image, a null device, or the cached bench image. */
    private DiskSpec disk() throws Exception {
        if (o.nullImageBytes > 0) {
            return DiskSpec.nullDevice(o.nullImageBytes);
        }
        if (o.network != null) {
            return DiskSpec.network(o.network);
        }
        if (o.image != null) {
            if (!Files.exists(o.image)) {
                throw o.usageError("--image " + o.image + " does not exist");
            }
            return "qcow2".equals(o.format) ? DiskSpec.qcow2(o.image) : DiskSpec.file(o.image);
        }
        if ("qcow2".equals(o.format)) {
            throw o.usageError("--format qcow2 needs --image PATH, a qcow2 image (qemu-img create -f qcow2 ...)");
        }
        if (o.socket != null) {
            return DiskSpec.nullDevice(0);
        }
        boolean onlyNull = o.backends.stream().allMatch(b -> b == BackendKind.NULL) && !"baseline".equals(o.mode);
        long size = Math.max(BenchImage.DEFAULT_BYTES, o.sizeBytes);
        if (onlyNull) {
            return DiskSpec.nullDevice(size);
        }
        return DiskSpec.file(BenchImage.ensure(size, err));
    }
}
