package io.vblk.perf.aio;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.CompletionSink;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.aio.IoVector;
import io.vblk.sys.EventFd;
import io.vblk.sys.Mapping;
import io.vblk.sys.PosixFile;

/**
 * Each I/O back end against fio on the same file: 4 KiB random reads, O_DIRECT, one thread,
 * closed loop at queue depths 1, 32 and 128, with the same batching on both sides (reap up to
 * {@code batch} completions, re-issue them, submit once; fio: {@code iodepth_batch_submit=batch,
 * iodepth_batch_complete_min=1, iodepth_batch_complete_max=batch}). Contenders alternate cell by
 * cell (and swap order each round) so that drift of this noisy disk hits both alike. Prints IOPS
 * and the ratio to fio.
 *
 * <p>fio's matching engine: libaio for linux-aio, io_uring for io_uring, psync with one job per
 * worker thread for threads (a synchronous engine has no queue depth of its own), null for null.
 *
 * <pre>
 * java $(scripts/jvm-flags) -cp perf/target/vblk-perf.jar io.vblk.perf.aio.BackendBench [options]
 *   --image PATH       the 1 GiB image, created and filled with random data once, then reused
 *                      (default /var/tmp/vblk-bench-1g.img)
 *   --seconds N        measured seconds per cell (default 5), after --warmup N (default 1)
 *   --depths 1,32,128  --batch 32  --rounds 1
 *   --backends linux-aio,io_uring,threads,null
 *   -Dvblk.bench.fixedBuffers=on  registers the buffers as io_uring fixed buffers (fio stays fixedbufs=0)
 * </pre>
 *
 * Not a test: it never runs in the build.
 */
public final class BackendBench {
    static final int BLOCK = 4096;
    /** {@code -Dvblk.bench.fixedBuffers=on}: register the buffers with the back end (io_uring READ_FIXED). */
    private static final boolean FIXED_BUFFERS = "on".equals(System.getProperty("vblk.bench.fixedBuffers"));
    private static final com.sun.management.OperatingSystemMXBean OS =
            (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean();
    static final long IMAGE_BYTES = 1L << 30;
    private static final int FILL_CHUNK = 1 << 20;
    private static final int WAIT_SLICE_MS = 100;
    private static final int FIO_READ_IOPS_FIELD = 7;
    private static final int FIO_USR_CPU_FIELD = 87;
    private static final int FIO_SYS_CPU_FIELD = 88;

    private final Path image;
    private final int seconds;
    private final int warmupSeconds;
    private final int[] depths;
    private final int batch;
    private final int rounds;
    private final List<BackendKind> kinds;

    private BackendBench(Path image, int seconds, int warmupSeconds, int[] depths, int batch, int rounds,
                         List<BackendKind> kinds) {
        this.image = image;
        this.seconds = seconds;
        this.warmupSeconds = warmupSeconds;
        this.depths = depths;
        this.batch = batch;
        this.rounds = rounds;
        this.kinds = kinds;
    }

    public static void main(String[] args) throws Exception {
        Path image = Path.of("/var/tmp/vblk-bench-1g.img");
        int seconds = 5;
        int warmup = 1;
        int[] depths = {1, 32, 128};
        int batch = 32;
        int rounds = 1;
        List<BackendKind> kinds = List.of(BackendKind.LINUX_AIO, BackendKind.IO_URING, BackendKind.THREADS, BackendKind.NULL);
        for (int i = 0; i < args.length; i++) {
            String value = i + 1 < args.length ? args[i + 1] : "";
            switch (args[i]) {
                case "--image": image = Path.of(value); i++; break;
                case "--seconds": seconds = Integer.parseInt(value); i++; break;
                case "--warmup": warmup = Integer.parseInt(value); i++; break;
                case "--batch": batch = Integer.parseInt(value); i++; break;
                case "--rounds": rounds = Integer.parseInt(value); i++; break;
                case "--depths": depths = parseInts(value); i++; break;
                case "--backends": kinds = parseKinds(value); i++; break;
                default: throw new IllegalArgumentException("unknown option " + args[i] + " (see the class javadoc)");
            }
        }
        new BackendBench(image, seconds, warmup, depths, batch, rounds, kinds).run();
    }

    private static int[] parseInts(String csv) {
        String[] parts = csv.split(",");
        int[] out = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            out[i] = Integer.parseInt(parts[i].trim());
        }
        return out;
    }

    private static List<BackendKind> parseKinds(String csv) {
        List<BackendKind> out = new ArrayList<>();
        for (String part : csv.split(",")) {
            out.add(BackendKind.parse(part));
        }
        return out;
    }

    /** One cell of the table: a back end at a depth, both contenders' IOPS summed over rounds. */
    private static final class Cell {
        final BackendKind kind;
        final int depth;
        double vblk;
        double fio;
        double vblkCpu;
        double fioCpu;
        long errors;
        String fioEngine;

        Cell(BackendKind kind, int depth) {
            this.kind = kind;
            this.depth = depth;
        }
    }

    private void run() throws Exception {
        ensureFilled(image);
        List<Cell> cells = new ArrayList<>();
        for (int depth : depths) {
            for (BackendKind kind : kinds) {
                cells.add(new Cell(kind, depth));
            }
        }
        System.err.printf(Locale.ROOT, "%d cells x %d rounds x 2 contenders x (%d + %d) s on %s%n",
                cells.size(), rounds, warmupSeconds, seconds, image);
        for (int round = 0; round < rounds; round++) {
            for (int c = 0; c < cells.size(); c++) {
                Cell cell = cells.get(c);
                boolean vblkFirst = (c + round) % 2 == 0;
                for (int turn = 0; turn < 2; turn++) {
                    if ((turn == 0) == vblkFirst) {
                        Result r = runBackend(cell.kind, cell.depth);
                        cell.vblk += r.iops / rounds;
                        cell.vblkCpu += r.cpuMicrosPerIo / rounds;
                        cell.errors += r.errors;
                        System.err.printf(Locale.ROOT, "  round %d %-9s qd %-3d vblk %,10.0f IOPS (%s, %.2f us cpu/IO)%n",
                                round + 1, cell.kind, cell.depth, r.iops, r.detail, r.cpuMicrosPerIo);
                    } else {
                        double[] fio = runFio(cell);
                        double iops = fio[0];
                        cell.fio += iops / rounds;
                        cell.fioCpu += fio[1] / rounds;
                        System.err.printf(Locale.ROOT, "  round %d %-9s qd %-3d fio  %,10.0f IOPS (%s, %.2f us cpu/IO)%n",
                                round + 1, cell.kind, cell.depth, iops, cell.fioEngine, fio[1]);
                    }
                }
            }
        }
        System.out.printf(Locale.ROOT, "%n4 KiB random read, O_DIRECT, %s, batch %d, %d s per cell (+%d s warm-up), %d round(s)%n",
                image, batch, seconds, warmupSeconds, rounds);
        System.out.printf(Locale.ROOT, "%-10s %5s %12s %12s %7s %11s %11s  %s%n", "back end", "depth", "vblk IOPS", "fio IOPS",
                "ratio", "vblk cpu/IO", "fio cpu/IO", "fio engine");
        for (Cell cell : cells) {
            System.out.printf(Locale.ROOT, "%-10s %5d %,12.0f %,12.0f %7.2f %9.2fus %9.2fus  %s%s%n", cell.kind, cell.depth,
                    cell.vblk, cell.fio, cell.fio > 0 ? cell.vblk / cell.fio : Double.NaN, cell.vblkCpu, cell.fioCpu,
                    cell.fioEngine, cell.errors > 0 ? "  (" + cell.errors + " errors!)" : "");
        }
    }

    // ------------------------------------------------------------------ the image

    /** Creates the image and fills it with written random data once (marker file), else reuses it. */
    static void ensureFilled(Path path) throws IOException {
        Path marker = path.resolveSibling(path.getFileName() + ".filled");
        if (Files.exists(marker) && Files.exists(path) && Files.size(path) == IMAGE_BYTES) {
            return;
        }
        System.err.println("filling " + path + " with 1 GiB of random data (once; reused afterwards)");
        Files.deleteIfExists(marker);
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(IMAGE_BYTES);
        }
        // Written, not fallocated: unwritten extents read as zeros without touching the disk.
        try (PosixFile file = PosixFile.open(path, false, true);
             Mapping chunk = Mapping.anonymous(FILL_CHUNK, false)) {
            UnsafeBuffer bytes = new UnsafeBuffer(chunk.address(), FILL_CHUNK);
            long seed = System.nanoTime();
            for (int i = 0; i < FILL_CHUNK; i += Long.BYTES) {
                seed = next(seed);
                bytes.putLong(i, seed);
            }
            for (long offset = 0; offset < IMAGE_BYTES; offset += FILL_CHUNK) {
                bytes.putLong(0, offset);
                long rc = file.pwrite(chunk.address(), FILL_CHUNK, offset);
                if (rc != FILL_CHUNK) {
                    throw new IOException("fill write at " + offset + " returned " + rc);
                }
            }
            if (file.fdatasync() != 0) {
                throw new IOException("fdatasync of " + path + " failed");
            }
        }
        Files.write(marker, "filled\n".getBytes(StandardCharsets.US_ASCII));
    }

    static long next(long x) {
        x ^= x << 13;
        x ^= x >>> 7;
        x ^= x << 17;
        return x;
    }

    // ------------------------------------------------------------------ vblk side

    private static final class Result {
        final double iops;
        final long errors;
        final String detail;
        /** CPU time per I/O in microseconds (all threads of the process, user + system). */
        final double cpuMicrosPerIo;

        Result(double iops, long errors, String detail, double cpuMicrosPerIo) {
            this.iops = iops;
            this.errors = errors;
            this.detail = detail;
            this.cpuMicrosPerIo = cpuMicrosPerIo;
        }
    }

    /** The closed loop: each completion re-issues its slot at a new random offset; one submit per poll. */
    private static final class Loop implements CompletionSink {
        private final IoBackend io;
        private final IoVector[] vectors;
        private final long blocks;
        private long random = 0x9E3779B97F4A7C15L;
        long completed;
        long errors;
        boolean reissue = true;

        Loop(IoBackend io, Mapping buffers, int depth) {
            this.io = io;
            this.vectors = new IoVector[depth];
            for (int slot = 0; slot < depth; slot++) {
                vectors[slot] = new IoVector(1);
                vectors[slot].add(buffers.address() + (long) slot * BLOCK, BLOCK);
            }
            this.blocks = IMAGE_BYTES / BLOCK;
        }

        void issue(int slot) {
            random = next(random);
            long offset = Long.remainderUnsigned(random, blocks) * BLOCK;
            if (io.prepareRead(offset, vectors[slot], slot) != 0) {
                errors++;
            }
        }

        @Override
        public void complete(long userData, long result) {
            completed++;
            if (result != BLOCK) {
                errors++;
            }
            if (reissue) {
                issue((int) userData);
            }
        }
    }

    private Result runBackend(BackendKind kind, int depth) throws IOException {
        try (Image img = Image.open(image, ImageOptions.defaults().readOnly(true));
             IoBackend io = IoBackends.open(kind, img, BackendOptions.depth(depth));
             Mapping buffers = Mapping.anonymous((long) depth * BLOCK, false)) {
            if (FIXED_BUFFERS) {
                // io_uring fixed buffers for the loop's buffers (fio's fixedbufs=1)
                int rc = io.registerBuffers(new long[] {buffers.address()}, new long[] {buffers.length()});
                if (rc <= 0) {
                    System.err.println("fixed buffers not registered: " + io.bufferRegistration());
                }
            }
            Loop loop = new Loop(io, buffers, depth);
            int reapBatch = Math.min(batch, depth);
            EventFd event = io.completionEvent();
            for (int slot = 0; slot < depth; slot++) {
                loop.issue(slot);
            }
            io.submit();
            long start = System.nanoTime();
            long measureFrom = start + TimeUnit.SECONDS.toNanos(warmupSeconds);
            long end = measureFrom + TimeUnit.SECONDS.toNanos(seconds);
            long completedAtStart = -1;
            long cpuAtStart = 0;
            long submits = 0;
            long sleeps = 0;
            long now;
            while ((now = System.nanoTime()) < end) {
                if (completedAtStart < 0 && now >= measureFrom) {
                    completedAtStart = loop.completed;
                    cpuAtStart = OS.getProcessCpuTime();
                    measureFrom = now;
                }
                if (io.poll(loop, reapBatch) > 0) {
                    io.submit();
                    submits++;
                    continue;
                }
                // Nothing ready: reset the event, look once more, then sleep on it.
                if (event != null) {
                    event.read();
                }
                if (io.poll(loop, reapBatch) > 0) {
                    io.submit();
                    submits++;
                    continue;
                }
                io.awaitCompletions(WAIT_SLICE_MS);
                sleeps++;
            }
            double elapsed = (System.nanoTime() - measureFrom) / 1e9;
            long cpuNs = OS.getProcessCpuTime() - cpuAtStart;
            long done = loop.completed - Math.max(0, completedAtStart);
            loop.reissue = false;
            io.drain(loop);
            double total = loop.completed;
            return new Result(done / elapsed, loop.errors, String.format(Locale.ROOT,
                    "%.1f I/Os per submit, %.2f sleeps per I/O", total / Math.max(1, submits), sleeps / total),
                    cpuNs / 1e3 / Math.max(1, done));
        }
    }

    // ------------------------------------------------------------------ fio side

    private static double percent(String field) {
        return Double.parseDouble(field.replace("%", ""));
    }

    /** Runs fio for {@code cell}; returns {IOPS, CPU microseconds per I/O}. */
    private double[] runFio(Cell cell) throws IOException, InterruptedException {
        int b = Math.min(batch, cell.depth);
        List<String> cmd = new ArrayList<>(List.of("fio", "--name=vblk-bench", "--rw=randread", "--bs=4k",
                "--time_based", "--runtime=" + seconds, "--ramp_time=" + warmupSeconds, "--norandommap",
                "--randrepeat=0", "--group_reporting", "--output-format=terse", "--terse-version=3"));
        switch (cell.kind) {
            case LINUX_AIO:
            case IO_URING:
                cell.fioEngine = cell.kind == BackendKind.LINUX_AIO ? "libaio" : "io_uring";
                cmd.addAll(List.of("--filename=" + image, "--direct=1", "--readonly", "--ioengine=" + cell.fioEngine,
                        "--iodepth=" + cell.depth, "--iodepth_batch_submit=" + b, "--iodepth_batch_complete_min=1",
                        "--iodepth_batch_complete_max=" + b));
                break;
            case THREADS:
                int jobs = BackendOptions.depth(cell.depth).workerThreads();
                cell.fioEngine = "psync x" + jobs + " jobs";
                cmd.addAll(List.of("--filename=" + image, "--direct=1", "--readonly", "--ioengine=psync",
                        "--numjobs=" + jobs, "--thread"));
                break;
            default:
                cell.fioEngine = "null";
                cmd.addAll(List.of("--ioengine=null", "--size=1g", "--iodepth=" + cell.depth,
                        "--iodepth_batch_submit=" + b, "--iodepth_batch_complete_min=1",
                        "--iodepth_batch_complete_max=" + b));
                break;
        }
        System.err.println("  $ " + String.join(" ", cmd));
        Process process = new ProcessBuilder(cmd).redirectErrorStream(false).start();
        String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(process.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        if (process.waitFor() != 0) {
            throw new IOException("fio failed: " + err + out);
        }
        for (String line : out.split("\n")) {
            String[] fields = line.split(";");
            // terse v3: version;fio;jobname;groupid;error;read_kb;read_bw;read_iops;... and, after
            // the read, write and trim sections, usr_cpu% (87) and sys_cpu% (88) of one CPU.
            if (fields.length > FIO_SYS_CPU_FIELD && "3".equals(fields[0])) {
                double iops = Double.parseDouble(fields[FIO_READ_IOPS_FIELD]);
                double cpuShare = (percent(fields[FIO_USR_CPU_FIELD]) + percent(fields[FIO_SYS_CPU_FIELD])) / 100;
                int jobs = cell.kind == BackendKind.THREADS ? BackendOptions.depth(cell.depth).workerThreads() : 1;
                // group_reporting averages the jobs' CPU shares: scale back to the whole run.
                return new double[] {iops, iops > 0 ? cpuShare * jobs * 1e6 / iops : Double.NaN};
            }
        }
        throw new IOException("no terse line in fio output: " + out + err);
    }
}
