package io.vblk.perf;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;

import io.vblk.perf.load.BusyLoad;
import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.load.RunObserver;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.Comparison;
import io.vblk.perf.vhost.BackendDaemon;
import io.vblk.perf.vhost.ServeCommand;
import io.vblk.perf.vhost.VhostUserContender;

/**
 * The contention rows of {@code vblk bench --compare} (issue 11's table): one vhost-user load
 * generator, one queue, 4 KiB random reads on a null disk, against {@code vblk serve} (its
 * default wait strategy), qemu-storage-daemon with its default iothread (adaptive polling) and
 * qemu-storage-daemon with {@code poll-max-ns=0}. Rows: depth 128 and depth 1 with the guest
 * polling, depth 1 with the guest blocking on the call eventfd. Columns: the machine otherwise
 * idle, then one and two competing busy processes ({@link BusyLoad}, not pinned) started for
 * the column and killed after it. With {@code --serve-cmd-b}, a second {@code vblk serve} (another
 * build) joins every cell as {@code vblk-b}, so a before/after pair meets the same load.
 *
 * <p>Each cell runs the three backends {@code bestOf} times, the order rotated every repeat so
 * each goes first once; the repeat with the most IOPS is kept per backend (the others are on
 * stderr). Every kept run carries the 1-minute load average read when it started: this machine
 * is shared, so the load says what else was competing.
 *
 * <p>Before its measured repeats each cell gives every backend one unmeasured run of the cell's
 * own workload (same order, same length): the JVM of a long-running vblk in a VMM has compiled
 * its I/O thread for the load it serves, while the group's depth-128 warm-up leaves code compiled
 * for another row, whose first run at depth 1 then deoptimizes and runs interpreted until the
 * compiler, competing with the busy loops, recompiles it. qemu-storage-daemon gets the same run.
 * {@code --no-cell-warmup} skips it.
 */
final class ContentionGroup {
    private static final long NULL_BYTES = 1L << 30;
    private static final long WARM_UP_NS = 2_000_000_000L;
    /** Lets the busy processes get on the CPU before the first measured run of a column. */
    private static final long BUSY_SETTLE_MS = 500;
    static final int[] BUSY_COUNTS = {0, 1, 2};

    /** One row of the table: the guest's depth and how it waits. */
    record Row(int depth, boolean guestPolls) {
        String key() {
            return "qd" + depth + "-" + (guestPolls ? "poll" : "block");
        }

        String title() {
            return "depth " + depth + ", guest " + (guestPolls ? "polling" : "blocking");
        }
    }

    static final List<Row> ROWS = List.of(new Row(128, true), new Row(1, true), new Row(1, false));

    /** The backends in table order: vblk serve, both qsd configurations, and the optional second vblk build. */
    private final List<String> backends;
    /** Indexes into {@link #backends}: the vblk builds, then the qemu-storage-daemon configurations. */
    private final List<Integer> vblks;
    private static final int QSD = 1;
    private static final int QSD_POLL0 = 2;

    /** Measured runs for {@code bestOf} repeats: every backend in every cell (or in the {@code cells} chosen, when any). */
    static int runs(int bestOf, boolean secondBuild, List<String> cells) {
        int n = cells.isEmpty() ? ROWS.size() * BUSY_COUNTS.length : (int) cells.stream().distinct().count();
        return n * (secondBuild ? 4 : 3) * bestOf;
    }

    /** Whether {@code cell} names a cell as {@code --contention-cell} takes it: {@code ROW:BUSY}, e.g. {@code qd1-block:2}. */
    static boolean isCell(String cell) {
        for (Row row : ROWS) {
            for (int busy : BUSY_COUNTS) {
                if (cell.equals(row.key() + ":" + busy)) {
                    return true;
                }
            }
        }
        return false;
    }

    /** Whether the cell runs: every cell when none was chosen. */
    private boolean chosen(Row row, int busy) {
        return o.contentionCells.isEmpty() || o.contentionCells.contains(row.key() + ":" + busy);
    }

    /** One measured run and the load when it started. */
    record Run(BenchResult result, double load) {
    }

    /** One cell: the best run of each backend, in {@link #backends} order. */
    record Cell(Row row, int busy, List<Run> best) {
    }

    private final BenchOptions o;
    private final PrintStream out;
    private final PrintStream err;
    private final Progress progress;
    private final Consumer<BenchResult> results;
    private final Consumer<Comparison> comparisons;

    ContentionGroup(BenchOptions o, PrintStream out, PrintStream err, Progress progress, Consumer<BenchResult> results,
                    Consumer<Comparison> comparisons) {
        this.o = o;
        this.out = out;
        this.err = err;
        this.progress = progress;
        this.results = results;
        this.comparisons = comparisons;
        boolean b = o.serveCommandB != null;
        this.backends = b ? List.of("vblk", "qsd", "qsd-poll0", "vblk-b") : List.of("vblk", "qsd", "qsd-poll0");
        this.vblks = b ? List.of(0, 3) : List.of(0);
    }

    /** Runs every cell, prints the tables; returns the cells. */
    List<Cell> run() throws Exception {
        DiskSpec nul = DiskSpec.nullDevice(NULL_BYTES);
        Workload base = Workload.randomReads(1, o.warmupNs, o.runtimeNs);
        List<String> serve = ServeCommand.resolve(o.serveCommand);
        Path dir = Files.createTempDirectory("vblk-bench-contention");
        out.printf(Locale.ROOT, "%n== contention: null device, one queue, 4 KiB random reads; vblk serve vs qemu-storage-daemon"
                + " (default iothread, and poll-max-ns=0); idle, 1 and 2 competing busy processes (%s, not pinned);"
                + " best of %d alternating runs%n", String.join(" ", BusyLoad.COMMAND), o.bestOf);
        List<Cell> cells = new ArrayList<>();
        List<BackendDaemon> daemons = new ArrayList<>();
        try {
            BackendDaemon vblk = start(daemons, BackendDaemon.vblkServe(serve, nul, dir.resolve("vblk.sock"), null, null, 1));
            BackendDaemon qsd = start(daemons, BackendDaemon.qemuStorageDaemon(nul, dir.resolve("qsd.sock"), "io_uring", -1, 1, false));
            BackendDaemon qsd0 = start(daemons, BackendDaemon.qemuStorageDaemon(nul, dir.resolve("qsd0.sock"), "io_uring", 0, 1, false));
            List<VhostUserContender> contenders = new ArrayList<>(List.of(
                    new VhostUserContender(vblk.socket(), "vblk-serve", "null", "default", nul.describe(), vblk.pid()),
                    new VhostUserContender(qsd.socket(), "qsd", "null-co", "default", nul.describe(), qsd.pid()),
                    new VhostUserContender(qsd0.socket(), "qsd", "null-co", "poll-max-ns=0", nul.describe(), qsd0.pid())));
            if (o.serveCommandB != null) {
                BackendDaemon b = start(daemons, BackendDaemon.vblkServe(ServeCommand.resolve(o.serveCommandB), nul,
                        dir.resolve("vblk-b.sock"), null, null, 1));
                contenders.add(new VhostUserContender(b.socket(), "vblk-serve-b", "null", "default", nul.describe(), b.pid()));
            }
            for (BackendDaemon d : daemons) {
                d.awaitReady();
                out.println("  started: " + d.commandLine());
            }
            Workload warm = Workload.randomReads(128, 0, WARM_UP_NS);
            for (VhostUserContender c : contenders) {
                c.run("warm-up", warm, RunObserver.NONE);
            }
            for (int busy : BUSY_COUNTS) {
                if (ROWS.stream().noneMatch(row -> chosen(row, busy))) {
                    continue;
                }
                try (BusyLoad load = BusyLoad.start(busy)) {
                    Thread.sleep(BUSY_SETTLE_MS);
                    for (Row row : ROWS) {
                        if (!chosen(row, busy)) {
                            continue;
                        }
                        Workload w = base.withDepth(row.depth()).withGuestPolls(row.guestPolls());
                        cells.add(cell(row, busy, w, contenders, daemons, load));
                    }
                }
            }
        } finally {
            daemons.forEach(BackendDaemon::close);
            try (var files = Files.list(dir)) {
                for (Path p : (Iterable<Path>) files::iterator) {
                    Files.deleteIfExists(p);
                }
            }
            Files.deleteIfExists(dir);
        }
        print(cells);
        return cells;
    }

    private static BackendDaemon start(List<BackendDaemon> started, BackendDaemon daemon) {
        started.add(daemon);
        return daemon;
    }

    private Cell cell(Row row, int busy, Workload w, List<VhostUserContender> contenders, List<BackendDaemon> daemons, BusyLoad load)
            throws Exception {
        List<Run> best = new ArrayList<>();
        contenders.forEach(c -> best.add(new Run(null, Double.NaN)));
        List<List<BenchResult>> all = new ArrayList<>();
        contenders.forEach(c -> all.add(new ArrayList<>()));
        if (!o.noCellWarmup) {
            for (int i = 0; i < contenders.size(); i++) {
                BenchResult r = contenders.get(i).run("warm-up-" + row.key() + "-busy" + busy + "-" + backends.get(i), w,
                        RunObserver.NONE);
                err.printf(Locale.ROOT, "  busy %d warm-up   %-36s %,12.0f IOPS  p50 %8.1f us  p99 %9.1f us (not kept)%n", busy,
                        backends.get(i), r.iops(), r.latencyUs(50), r.latencyUs(99));
            }
        }
        for (int repeat = 0; repeat < o.bestOf; repeat++) {
            for (int k = 0; k < contenders.size(); k++) {
                int i = (k + repeat) % contenders.size();
                String name = "contention-" + row.key() + "-busy" + busy + "-" + backends.get(i);
                double loadAvg = Machine.load();
                BenchResult r = contenders.get(i).run(name, w, progress);
                err.printf(Locale.ROOT, "  busy %d repeat %d  %-36s %,12.0f IOPS  p50 %8.1f us  p99 %9.1f us  cpu %6.2f us/io"
                        + "  run-queue wait backend %6.2f guest %6.2f us/io  load %.2f%s%n", busy, repeat + 1, name, r.iops(),
                        r.latencyUs(50), r.latencyUs(99), r.cpuUsPerIo(), r.perIo().getOrDefault("backend_wait_us_per_io", Double.NaN),
                        r.perIo().getOrDefault("guest_wait_us_per_io", Double.NaN), loadAvg,
                        r.errors() > 0 ? "  " + r.errors() + " ERRORS" : "");
                all.get(i).add(r);
                if (best.get(i).result() == null || r.iops() > best.get(i).result().iops()) {
                    best.set(i, new Run(r, loadAvg));
                }
            }
            for (BackendDaemon d : daemons) {
                if (!d.isAlive()) {
                    throw new IllegalStateException("backend died: " + d.commandLine() + "\n" + d.logTail());
                }
            }
            if (!load.allAlive()) {
                throw new IllegalStateException("a competing busy process died: the column would measure less contention than it says");
            }
        }
        if (o.bestOf > 1) {
            // The kept run is each contender's luckiest; the medians say whether one is ahead
            // of the other in general or only met a quieter moment (on a shared machine single
            // runs of one build differ by 2x).
            for (int i = 0; i < contenders.size(); i++) {
                err.printf(Locale.ROOT, "  busy %d median of %d  %-36s %,12.0f IOPS  p99 %9.1f us  cpu %6.2f us/io"
                        + "  run-queue wait backend %6.2f guest %6.2f us/io%n", busy, all.get(i).size(), backends.get(i),
                        median(all.get(i), BenchResult::iops), median(all.get(i), r -> r.latencyUs(99)),
                        median(all.get(i), BenchResult::cpuUsPerIo),
                        median(all.get(i), r -> r.perIo().getOrDefault("backend_wait_us_per_io", Double.NaN)),
                        median(all.get(i), r -> r.perIo().getOrDefault("guest_wait_us_per_io", Double.NaN)));
            }
        }
        for (Run r : best) {
            results.accept(r.result());
        }
        for (int v : vblks) {
            String what = "contention " + row.key() + ", " + busy + " busy: " + backends.get(v) + " / ";
            for (int peer : List.of(QSD, QSD_POLL0)) {
                BenchResult mine = best.get(v).result();
                BenchResult theirs = best.get(peer).result();
                String peerName = peer == QSD ? "qsd" : "qsd poll-max-ns=0";
                comparisons.accept(Comparison.goal(what + peerName, "iops", mine, theirs, 1.0, true));
                comparisons.accept(Comparison.goal(what + peerName + ", p99", "p99_us", mine, theirs, 1.0, false));
                comparisons.accept(Comparison.of(what + peerName + ", CPU per I/O", "cpu_us_per_io", mine, theirs));
            }
        }
        return new Cell(row, busy, List.copyOf(best));
    }

    /** The table (IOPS ratios) against each qsd, then every kept run. */
    private void print(List<Cell> cells) {
        for (int v : vblks) {
            for (int peer : List.of(QSD, QSD_POLL0)) {
                out.printf(Locale.ROOT, "%n%s IOPS / qsd IOPS, qsd %s (best of %d; load = 1-minute average at the start of"
                        + " the two kept runs)%n%n", backends.get(v), peer == QSD ? "with its default iothread" : "with poll-max-ns=0",
                        o.bestOf);
                out.println("| load | machine otherwise idle | one competing busy process | two competing busy processes |");
                out.println("|---|---:|---:|---:|");
                for (Row row : ROWS) {
                    StringBuilder line = new StringBuilder("| " + row.title() + " |");
                    for (int busy : BUSY_COUNTS) {
                        Cell c = find(cells, row, busy);
                        if (c == null) {
                            line.append(" - |");
                            continue;
                        }
                        Run mine = c.best().get(v);
                        Run theirs = c.best().get(peer);
                        line.append(String.format(Locale.ROOT, " %.2fx (load %.1f/%.1f) |", mine.result().iops() / theirs.result().iops(),
                                mine.load(), theirs.load()));
                    }
                    out.println(line);
                }
            }
        }
        out.printf(Locale.ROOT, "%n| row | busy | backend | IOPS | p50 us | p99 us | CPU us/io | load |%n");
        out.println("|---|---:|---|---:|---:|---:|---:|---:|");
        for (Cell c : cells) {
            for (int i = 0; i < backends.size(); i++) {
                Run r = c.best().get(i);
                out.printf(Locale.ROOT, "| %s | %d | %s | %,.0f | %.1f | %.1f | %.2f | %.2f |%n", c.row().title(), c.busy(),
                        backends.get(i), r.result().iops(), r.result().latencyUs(50), r.result().latencyUs(99),
                        r.result().cpuUsPerIo(), r.load());
            }
        }
    }

    /** The median of {@code f} over {@code runs} (the mean of the middle two for an even count), NaN for none. */
    static double median(List<BenchResult> runs, java.util.function.ToDoubleFunction<BenchResult> f) {
        double[] v = runs.stream().mapToDouble(f).sorted().toArray();
        if (v.length == 0) {
            return Double.NaN;
        }
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }

    private static Cell find(List<Cell> cells, Row row, int busy) {
        for (Cell c : cells) {
            if (c.row().equals(row) && c.busy() == busy) {
                return c;
            }
        }
        return null; // not chosen (--contention-cell)
    }
}
