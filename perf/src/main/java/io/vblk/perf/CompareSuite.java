package io.vblk.perf;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import io.vblk.aio.BackendKind;
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.WaitStrategy;
import io.vblk.perf.baseline.BaselineContender;
import io.vblk.perf.engine.EmbeddedContender;
import io.vblk.perf.fio.FioContender;
import io.vblk.perf.load.Contender;
import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.load.RunObserver;
import io.vblk.perf.load.RwMode;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.Comparison;
import io.vblk.perf.report.GoalCheck;
import io.vblk.perf.report.ResultTable;
import io.vblk.perf.report.SvgChart;
import io.vblk.perf.vhost.BackendDaemon;
import io.vblk.perf.vhost.ServeCommand;
import io.vblk.perf.vhost.VhostUserContender;

/**
 * {@code vblk bench --compare}: each group's contenders run in turn, round after round, the order
 * reversed every round (A B, B A, ...) so that drift of this noisy machine hits them alike; the
 * rounds of each contender are merged, then compared. All on 4 KiB random reads.
 *
 * <ol>
 * <li>dataplane: vblk embedded vs the data-plane-off baseline, file, depth 32.
 * <li>fio: vblk embedded and vblk serve (vhost-user, guest blocking) vs fio (same engine, depth and
 *     batching), file, depth 128, in the same rounds; with embedded's I/O thread yielding instead of
 *     sleeping between rounds, and where embedded's requests were (sampled).
 * <li>vhost: vblk serve vs qemu-storage-daemon, both started here, driven by the same
 *     load generator: file and null device x depth 128 and 1 x guest blocking on the call
 *     eventfd (EVENT_IDX) and polling.
 * <li>wait: the wait strategies, embedded, null back end: depth 128 with the guest blocking and
 *     polling, depth 1 with the guest polling.
 * <li>contention ({@code --contention} or {@code --only contention}; not in the default set, it
 *     adds about 27 x ({@code --best-of} + 1 warm-up) runs): vblk serve vs qemu-storage-daemon (default iothread,
 *     and poll-max-ns=0) on a null device, idle and with one and two competing busy processes
 *     ({@link ContentionGroup}).
 * </ol>
 */
final class CompareSuite {
    private static final long NULL_BYTES = 1L << 30;
    private static final long WARM_UP_NS = 2_000_000_000L;

    private final BenchOptions o;
    private final PrintStream out;
    private final PrintStream err;
    private final Outputs outputs;
    private final Progress progress;
    private final Map<String, BenchResult> byName = new LinkedHashMap<>();
    private final List<String> failures = new ArrayList<>();
    private final BackendKind fileBackend;

    /** One contender in a group: its result name, who serves, what the guest does. */
    private record Entry(String name, Contender contender, Workload workload) {
    }

    CompareSuite(BenchOptions options, List<String> args, PrintStream out, PrintStream err) {
        this.o = options;
        this.out = out;
        this.err = err;
        double load = Machine.load();
        this.outputs = new Outputs(options, args, load);
        this.progress = new Progress(err, !options.quiet);
        this.fileBackend = options.backends.get(0);
        Outputs.header(out, args, load);
    }

    int run() throws Exception {
        Path image = o.image != null ? o.image : BenchImage.ensure(BenchImage.DEFAULT_BYTES, err);
        if (!Files.exists(image)) {
            throw o.usageError("--image " + image + " does not exist");
        }
        DiskSpec file = DiskSpec.file(image);
        DiskSpec nul = DiskSpec.nullDevice(NULL_BYTES);
        Workload base = Workload.randomReads(32, o.warmupNs, o.runtimeNs);
        int cells = (o.only.contains("dataplane") ? 2 : 0) + (o.only.contains("fio") ? 4 : 0) + (o.only.contains("vhost") ? 2 * (o.vhostCells.isEmpty() ? 8 : o.vhostCells.size()) : 0)
                + (o.only.contains("wait") ? 15 : 0);
        int runs = cells * o.rounds + (o.only.contains("contention") ? ContentionGroup.runs(o.bestOf + (o.noCellWarmup ? 0 : 1), o.serveCommandB != null, o.contentionCells) : 0);
        out.printf(Locale.ROOT, "4 KiB random reads; file %s (%s back end), null device %s; %d runs x (%.1f + %.1f s)"
                + " = about %.0f s%n", image, fileBackend, ResultTable.size(NULL_BYTES), runs, o.warmupNs / 1e9,
                o.runtimeNs / 1e9, runs * (o.warmupNs + o.runtimeNs) / 1e9 * 1.1 + 4 + (o.only.contains("vhost") ? 12 : 0)
                + (o.only.contains("contention") ? 10 : 0));
        if (o.only.contains("dataplane") || o.only.contains("fio") || o.only.contains("wait")) {
            warmUpEngine(file);
        }
        if (o.only.contains("dataplane")) {
            group("dataplane", () -> dataplane(file, base.withDepth(32)));
        }
        if (o.only.contains("fio")) {
            group("fio", () -> fio(file, base.withDepth(128)));
        }
        if (o.only.contains("vhost")) {
            group("vhost", () -> vhost(file, nul, base));
        }
        if (o.only.contains("wait")) {
            group("wait", () -> waits(nul, base));
        }
        if (o.only.contains("contention")) {
            group("contention", () -> new ContentionGroup(o, out, err, progress, this::addResult, this::compare).run());
        }
        goals();
        ResultTable table = new ResultTable(out, 10);
        table.comparisons(outputs.comparisons);
        table.goals(outputs.goals);
        out.printf(Locale.ROOT, "%nload        %.2f at the end%n", Machine.load());
        for (String f : failures) {
            out.println("FAILED      " + f);
        }
        outputs.write(err, "vblk bench --compare");
        return failures.isEmpty() ? 0 : 1;
    }

    /** A group body. */
    private interface Body {
        void run() throws Exception;
    }

    private void group(String name, Body body) {
        try {
            body.run();
        } catch (Exception | Error e) {
            String message = e.getMessage() == null ? e.toString() : e.getMessage();
            failures.add(name + ": " + message);
            err.println("vblk bench: comparison group '" + name + "' failed: " + message);
        }
    }

    /** Compiles the engine's and the guest's hot paths before anything is measured. */
    private void warmUpEngine(DiskSpec file) {
        Workload warm = Workload.randomReads(128, 0, WARM_UP_NS);
        embedded(DiskSpec.nullDevice(NULL_BYTES), BackendKind.NULL, WaitStrategy.ADAPTIVE).run("warm-up", warm, RunObserver.NONE);
        embedded(file, fileBackend, WaitStrategy.ADAPTIVE).run("warm-up", warm, RunObserver.NONE);
    }

    // ------------------------------------------------------------------ groups

    private void dataplane(DiskSpec file, Workload w) throws Exception {
        List<BenchResult> r = alternate("data plane on vs off: file, depth " + w.depth(), List.of(
                new Entry("dataplane-on", embedded(file, fileBackend, WaitStrategy.ADAPTIVE), w),
                new Entry("dataplane-off", new BaselineContender(file), w)));
        compare(Comparison.goal("data plane on / off", "iops", r.get(0), r.get(1), 4.3, true));
        compare(Comparison.of("data plane on / off, CPU per I/O", "cpu_us_per_io", r.get(0), r.get(1)));
    }

    /**
     * vblk embedded and vblk serve (vhost-user, this process the frontend and guest, blocking on
     * the call eventfd) against fio, the three alternating in the same rounds on the same file.
     */
    private void fio(DiskSpec file, Workload w) throws Exception {
        FioContender fio = new FioContender(file, fileBackend, o.fioBatch);
        Path dir = Files.createTempDirectory("vblk-bench-fio");
        try (BackendDaemon serve = BackendDaemon.vblkServe(ServeCommand.resolve(o.serveCommand), file, dir.resolve("vblk.sock"),
                fileBackend.cliName(), WaitStrategy.ADAPTIVE.cliName(), 1)) {
            serve.awaitReady();
            out.println("  started: " + serve.commandLine());
            Contender served = new VhostUserContender(serve.socket(), "vblk-serve", fileBackend.cliName(), "adaptive",
                    file.describe(), serve.pid());
            // The daemon's JIT and first connection set-up, outside the measured runs.
            served.run("warm-up", Workload.randomReads(w.depth(), 0, WARM_UP_NS), RunObserver.NONE);
            List<BenchResult> r = alternate("vblk vs the device limit (fio): file, depth " + w.depth(), List.of(
                    new Entry("embedded-qd" + w.depth(), embedded(file, fileBackend, WaitStrategy.ADAPTIVE), w),
                    new Entry("fio-qd" + w.depth(), fio, w),
                    new Entry("serve-qd" + w.depth(), served, w),
                    new Entry("embedded-yielding-qd" + w.depth(), embedded(file, fileBackend, WaitStrategy.YIELDING), w)));
            checkAlive(serve);
            out.println("  fio: " + fio.lastCommand());
            // fio drives the disk from one thread; the embedded device needs a guest thread too, on
            // the same cores: the CPU both spend per I/O, side by side.
            double guest = r.get(0).perIo().getOrDefault("guest_cpu_us_per_io", Double.NaN);
            out.printf(Locale.ROOT, "  CPU per I/O: vblk device %.2f us + guest %.2f us = %.2f us; fio %.2f us; vblk serve %.2f us%n",
                    r.get(0).cpuUsPerIo(), guest, r.get(0).cpuUsPerIo() + guest, r.get(1).cpuUsPerIo(), r.get(2).cpuUsPerIo());
            compare(Comparison.goal("vblk embedded / fio, file qd" + w.depth(), "iops", r.get(0), r.get(1), 0.95, true));
            compare(Comparison.goal("vblk serve / fio, file qd" + w.depth() + " (same rounds)", "iops", r.get(2), r.get(1), 0.9, true));
            compare(Comparison.of("vblk embedded, I/O thread yielding / fio, file qd" + w.depth(), "iops", r.get(3), r.get(1)));
            occupancy(r.get(0), r.get(1));
        } finally {
            deleteTree(dir);
        }
    }

    /**
     * Where the embedded run's requests were (sampled, see the perf engine's OccupancySampler)
     * and, by Little's law, how long each spent with the device, against fio's time per request
     * with every request in the kernel: equal times mean the gap is requests out of the kernel
     * (with the guest or between the threads), not a slower disk.
     */
    private void occupancy(BenchResult vblk, BenchResult fio) {
        Map<String, Double> p = vblk.perIo();
        Double device = p.get("occ_device");
        if (device == null || vblk.iops() <= 0 || fio.iops() <= 0) {
            return;
        }
        out.printf(Locale.ROOT, "  requests of %d (embedded, sampled): with the device %.1f, in the avail ring %.1f, in the used ring %.1f,"
                + " with the guest %.1f%n", vblk.workload().depth(), device, p.getOrDefault("occ_avail", Double.NaN),
                p.getOrDefault("occ_used", Double.NaN) + p.getOrDefault("occ_unpublished", 0.0), p.getOrDefault("occ_guest", Double.NaN));
        out.printf(Locale.ROOT, "  time per request with the device (Little): vblk %.0f us; fio, all %d in the kernel: %.0f us%n",
                device / vblk.iops() * 1e6, fio.workload().depth(), fio.workload().depth() / fio.iops() * 1e6);
    }

    private static void deleteTree(Path dir) throws java.io.IOException {
        try (var files = Files.list(dir)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                Files.deleteIfExists(p);
            }
        }
        Files.deleteIfExists(dir);
    }

    private void vhost(DiskSpec file, DiskSpec nul, Workload base) throws Exception {
        List<String> serve = ServeCommand.resolve(o.serveCommand);
        Path dir = Files.createTempDirectory("vblk-bench");
        String qsdAio = fileBackend == BackendKind.LINUX_AIO ? "native" : "io_uring";
        String qsdWait = o.qsdPollMaxNs >= 0 ? "poll-max-ns=" + o.qsdPollMaxNs : "default";
        try (BackendDaemon vblkFile = BackendDaemon.vblkServe(serve, file, dir.resolve("vblk-file.sock"), fileBackend.cliName(),
                     WaitStrategy.ADAPTIVE.cliName(), 1);
             BackendDaemon vblkNull = BackendDaemon.vblkServe(serve, nul, dir.resolve("vblk-null.sock"), null,
                     WaitStrategy.ADAPTIVE.cliName(), 1);
             BackendDaemon qsdFile = BackendDaemon.qemuStorageDaemon(file, dir.resolve("qsd-file.sock"), qsdAio, o.qsdPollMaxNs, 1, false);
             BackendDaemon qsdNull = BackendDaemon.qemuStorageDaemon(nul, dir.resolve("qsd-null.sock"), qsdAio, o.qsdPollMaxNs, 1, false)) {
            for (BackendDaemon d : List.of(vblkFile, vblkNull, qsdFile, qsdNull)) {
                d.awaitReady();
                out.println("  started: " + d.commandLine());
            }
            // One unmeasured run per backend first: a JVM backend's JIT and both daemons' first
            // connection set-up would otherwise land in whichever measured run comes first.
            Workload warm = Workload.randomReads(128, 0, WARM_UP_NS);
            for (BackendDaemon d : List.of(vblkFile, vblkNull, qsdFile, qsdNull)) {
                new VhostUserContender(d.socket(), "warm-up", "-", "-", "-", d.pid()).run("warm-up", warm, RunObserver.NONE);
            }
            for (DiskSpec disk : List.of(file, nul)) {
                boolean isNull = disk.isNull();
                BackendDaemon v = isNull ? vblkNull : vblkFile;
                BackendDaemon q = isNull ? qsdNull : qsdFile;
                Contender vc = new VhostUserContender(v.socket(), "vblk-serve", isNull ? "null" : fileBackend.cliName(), "adaptive",
                        disk.describe(), v.pid());
                Contender qc = new VhostUserContender(q.socket(), "qsd", isNull ? "null-co" : qsdAio, qsdWait,
                        disk.describe(), q.pid());
                for (int depth : new int[] {128, 1}) {
                    for (boolean poll : new boolean[] {false, true}) {
                        Workload w = base.withDepth(depth).withGuestPolls(poll);
                        String key = (isNull ? "null" : "file") + "-qd" + depth + "-" + (poll ? "poll" : "block");
                        if (!o.vhostCells.isEmpty() && !o.vhostCells.contains(key)) {
                            continue;
                        }
                        List<BenchResult> r = alternate("vblk serve vs qemu-storage-daemon: " + (isNull ? "null device" : "file")
                                + ", depth " + depth + ", guest " + (poll ? "polling" : "blocking (call eventfd)"), List.of(
                                new Entry("serve-" + key, vc, w), new Entry("qsd-" + key, qc, w)));
                        checkAlive(v, q);
                        vhostComparisons(key, isNull, depth, poll, r.get(0), r.get(1));
                    }
                }
            }
        } finally {
            deleteTree(dir);
        }
    }

    private void vhostComparisons(String key, boolean isNull, int depth, boolean poll, BenchResult vblk, BenchResult qsd) {
        String what = "vblk serve / qsd, " + key;
        if (!isNull && depth == 128 && !poll) {
            compare(Comparison.goal(what, "iops", vblk, qsd, 3, true));
            BenchResult fio = byName.get("fio-qd128");
            if (fio != null) {
                compare(Comparison.of("vblk serve / fio, file-qd128-block (fio group's run)", "iops", vblk, fio));
            }
        } else if (isNull && depth == 128 && !poll) {
            compare(Comparison.goal(what, "iops", vblk, qsd, 2, true));
            compare(Comparison.goal(what + ", CPU per I/O", "cpu_us_per_io", vblk, qsd, 0.5, false));
        } else if (depth == 1) {
            compare(Comparison.of(what + ", p50", "p50_us", vblk, qsd));
        } else {
            compare(Comparison.of(what, "iops", vblk, qsd));
        }
        if (depth == 128 && !(isNull && !poll)) {
            compare(Comparison.of(what + ", CPU per I/O", "cpu_us_per_io", vblk, qsd));
        }
    }

    private static void checkAlive(BackendDaemon... daemons) {
        for (BackendDaemon d : daemons) {
            if (!d.isAlive()) {
                throw new IllegalStateException("backend died: " + d.commandLine() + "\n" + d.logTail());
            }
        }
    }

    private void waits(DiskSpec nul, Workload base) throws Exception {
        List<WaitStrategy> strategies = List.of(WaitStrategy.ADAPTIVE, WaitStrategy.BLOCKING, WaitStrategy.SLEEPING,
                WaitStrategy.YIELDING, WaitStrategy.BUSY_SPIN);
        Workload[] workloads = {base.withDepth(128), base.withDepth(128).withGuestPolls(true), base.withDepth(1).withGuestPolls(true)};
        for (Workload w : workloads) {
            String key = "qd" + w.depth() + (w.guestPolls() ? "-poll" : "-block");
            List<Entry> entries = new ArrayList<>();
            for (WaitStrategy s : strategies) {
                entries.add(new Entry("wait-" + s.cliName() + "-" + key, embedded(nul, BackendKind.NULL, s), w));
            }
            List<BenchResult> r = alternate("wait strategies: embedded, null back end, depth " + w.depth() + ", guest "
                    + (w.guestPolls() ? "polling" : "blocking"), entries);
            for (int i = 1; i < r.size(); i++) {
                compare(Comparison.of(strategies.get(i).cliName() + " / adaptive, " + key, w.depth() == 1 ? "p50_us" : "iops",
                        r.get(i), r.get(0)));
            }
        }
    }

    private EmbeddedContender embedded(DiskSpec disk, BackendKind backend, WaitStrategy wait) {
        return new EmbeddedContender(disk, backend, wait, ThreadingMode.SHARED, 1);
    }

    // ------------------------------------------------------------------ running and reporting

    /**
     * Runs the entries round after round, reversing their order every round; prints each run on
     * stderr and the merged results as a table; returns the merged results in entry order.
     */
    private List<BenchResult> alternate(String title, List<Entry> entries) throws Exception {
        out.printf(Locale.ROOT, "%n== %s%n", title);
        List<List<BenchResult>> rounds = new ArrayList<>();
        for (int i = 0; i < entries.size(); i++) {
            rounds.add(new ArrayList<>());
        }
        for (int round = 0; round < o.rounds; round++) {
            List<Integer> order = new ArrayList<>();
            for (int i = 0; i < entries.size(); i++) {
                order.add(i);
            }
            if (round % 2 == 1) {
                Collections.reverse(order);
            }
            for (int i : order) {
                Entry e = entries.get(i);
                BenchResult r = e.contender().run(e.name(), e.workload(), progress);
                rounds.get(i).add(r);
                err.printf(Locale.ROOT, "  round %d  %-30s %,12.0f IOPS  p50 %8.1f us  p99 %9.1f us  cpu %s us/io%s  [%s]%n",
                        round + 1, e.name(), r.iops(), r.latencyUs(50), r.latencyUs(99),
                        Double.isNaN(r.cpuUsPerIo()) ? "n/a" : String.format(Locale.ROOT, "%.2f", r.cpuUsPerIo()),
                        r.errors() > 0 ? "  " + r.errors() + " ERRORS" : "", r.perIoSummary());
            }
        }
        List<BenchResult> merged = new ArrayList<>();
        for (List<BenchResult> r : rounds) {
            BenchResult m = BenchResult.merge(r);
            merged.add(m);
            byName.put(m.name(), m);
            outputs.results.add(m);
        }
        ResultTable table = new ResultTable(out, Math.max(24, ResultTable.nameWidth(merged)));
        table.header();
        merged.forEach(table::row);
        outputs.panels.add(new SvgChart.Panel(title, merged));
        return merged;
    }

    private void addResult(BenchResult r) {
        byName.put(r.name(), r);
        outputs.results.add(r);
    }

    private void compare(Comparison c) {
        outputs.comparisons.add(c);
        if (c.goal() != null) {
            outputs.goals.add(new GoalCheck(c.name() + " " + c.goal() + "x", c.ratio(), "x", c.goalValue(), c.atLeast()));
        }
    }

    /** The goals that are not ratios: absolute IOPS, latency and allocation. */
    private void goals() {
        BenchResult p50 = byName.get("serve-null-qd1-poll");
        if (p50 != null) {
            outputs.goals.add(new GoalCheck("vblk serve, null, depth 1, guest polling: p50 <= 2 us", p50.latencyUs(50), "us", 2, false));
        }
        BenchResult best = null;
        for (BenchResult r : byName.values()) {
            if (r.name().startsWith("wait-") && r.workload().depth() == 128 && (best == null || r.iops() > best.iops())) {
                best = r;
            }
        }
        BenchResult adaptive = byName.get("wait-adaptive-qd128-block");
        if (adaptive != null) {
            outputs.goals.add(new GoalCheck("embedded, null, default wait, guest blocking: >= 2 M IOPS (" + adaptive.name() + ")",
                    adaptive.iops(), "IOPS", 2e6, true));
        }
        if (best != null) {
            outputs.goals.add(new GoalCheck("embedded, null, best: >= 2 M IOPS (" + best.name() + ")", best.iops(), "IOPS", 2e6, true));
            outputs.goals.add(new GoalCheck("embedded, null: allocation per request ~0 (" + best.name() + ")",
                    best.allocBytesPerIo(), "B/io", 1, false));
        }
    }
}
