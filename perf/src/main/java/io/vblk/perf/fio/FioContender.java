package io.vblk.perf.fio;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.perf.load.Contender;
import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.load.RunObserver;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.Json;
import io.vblk.perf.report.Latency;

/**
 * fio on the same device with the matching engine and the same batching: the device limit vblk
 * is held to. io_uring and linux-aio map to fio's io_uring and libaio with
 * {@code iodepth_batch_submit=B, iodepth_batch_complete_min=1, iodepth_batch_complete_max=B};
 * threads to psync with one job per worker thread; null (or a null device) to fio's null engine.
 * Latency is fio's total latency (submission to completion, {@code lat_percentiles=1}); CPU is
 * fio's own user + system time.
 *
 * <p>What fio 3.33's io_uring engine does with these options (its defaults, seen with strace):
 * one thread that submits and reaps itself, waiting in {@code io_uring_enter(GETEVENTS)};
 * {@code nonvectored} unset, so IORING_OP_READ/WRITE (vblk's back end sends one-segment transfers
 * the same way); no registered files ({@code registerfiles=0}; vblk registers its image, a small
 * advantage to vblk), no registered buffers ({@code fixedbufs=0}), no polled completions
 * ({@code hipri=0}), no SQ thread; the ring set up with CQSIZE, COOP_TASKRUN, SINGLE_ISSUER and
 * DEFER_TASKRUN (completions posted only when fio asks, no task-work interruptions; vblk's ring
 * has COOP_TASKRUN, no interruptions either, but posts completions whenever its thread enters the
 * kernel and signals an eventfd, since its I/O thread also waits for kicks).
 */
public final class FioContender implements Contender {
    private static final String PERCENTILES = "1:10:25:50:75:90:95:99:99.5:99.9:99.95:99.99:99.999";

    private final DiskSpec disk;
    private final BackendKind backend;
    private final int batch;
    private String lastCommand = "";

    /** fio over {@code disk} with {@code backend}'s engine, batching up to {@code batch}. */
    public FioContender(DiskSpec disk, BackendKind backend, int batch) {
        this.disk = disk;
        this.backend = backend;
        this.batch = batch;
    }

    @Override
    public String label() {
        return "fio (" + engine() + ")";
    }

    /** The command line of the last run. */
    public String lastCommand() {
        return lastCommand;
    }

    private String engine() {
        if (disk.isNull()) {
            return "null";
        }
        switch (backend) {
            case IO_URING: return "io_uring";
            case LINUX_AIO: return "libaio";
            case THREADS: return "psync";
            default: return "null";
        }
    }

    /** The fio command for {@code w}. */
    public List<String> command(Workload w) {
        String engine = engine();
        int b = Math.max(1, Math.min(batch, w.depth()));
        int jobs = w.queues();
        List<String> cmd = new ArrayList<>(List.of("fio", "--name=vblk-bench", "--rw=" + w.rw().fioName(),
                "--bs=" + w.blockSize(), "--ioengine=" + engine, "--time_based",
                "--runtime=" + Math.max(1, w.runtimeNs() / 1_000_000) + "ms", "--norandommap", "--randrepeat=0",
                "--group_reporting", "--output-format=json", "--lat_percentiles=1", "--percentile_list=" + PERCENTILES));
        if (w.warmupNs() > 0) {
            cmd.add("--ramp_time=" + Math.max(1, w.warmupNs() / 1_000_000) + "ms");
        }
        if (w.rw() == io.vblk.perf.load.RwMode.RANDRW) {
            cmd.add("--rwmixread=" + w.readPercent());
        }
        if ("psync".equals(engine)) {
            jobs *= BackendOptions.depth(w.depth()).workerThreads();
            cmd.add("--thread");
        } else {
            cmd.addAll(List.of("--iodepth=" + w.depth(), "--iodepth_batch_submit=" + b, "--iodepth_batch_complete_min=1",
                    "--iodepth_batch_complete_max=" + b));
        }
        cmd.add("--numjobs=" + jobs);
        if (disk.isNull() || "null".equals(engine)) {
            cmd.add("--size=" + (w.rangeBytes() > 0 ? w.rangeBytes() : disk.isNull() ? disk.nullSizeBytes() : 1L << 30));
        } else {
            cmd.addAll(List.of("--filename=" + disk.path(), "--direct=1"));
            if (!w.rw().writes()) {
                cmd.add("--readonly");
            }
            if (w.rangeBytes() > 0) {
                cmd.add("--size=" + w.rangeBytes());
            }
        }
        return cmd;
    }

    @Override
    public BenchResult run(String name, Workload w, RunObserver observer) throws IOException, InterruptedException {
        List<String> cmd = command(w);
        lastCommand = String.join(" ", cmd);
        Path errFile = Files.createTempFile("vblk-bench-fio", ".err");
        String out;
        String err;
        observer.started(name, () -> -1, w.warmupNs(), w.runtimeNs());
        try {
            Process process = new ProcessBuilder(cmd).redirectError(errFile.toFile()).start();
            process.getOutputStream().close();
            out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            int status = process.waitFor();
            err = Files.readString(errFile, StandardCharsets.UTF_8);
            if (status != 0) {
                throw new IOException("fio failed (" + lastCommand + "): " + err.trim() + " " + out.trim());
            }
        } finally {
            observer.finished();
            Files.deleteIfExists(errFile);
        }
        return parse(name, w, out, err, jobsOf(cmd));
    }

    private static int jobsOf(List<String> cmd) {
        for (String s : cmd) {
            if (s.startsWith("--numjobs=")) {
                return Integer.parseInt(s.substring("--numjobs=".length()));
            }
        }
        return 1;
    }

    private BenchResult parse(String name, Workload w, String out, String err, int jobs) throws IOException {
        Object root;
        try {
            root = Json.parse(out);
        } catch (IllegalArgumentException e) {
            throw new IOException("cannot read fio's JSON (" + e.getMessage() + "): " + out + err, e);
        }
        Object jobList = Json.path(root, "jobs");
        if (!(jobList instanceof List) || ((List<?>) jobList).isEmpty()) {
            throw new IOException("no jobs in fio's output: " + out + err);
        }
        Object job = ((List<?>) jobList).get(0);
        double reads = Json.number(job, "read", "total_ios");
        double writes = Json.number(job, "write", "total_ios");
        double runtimeMs = Math.max(Json.number(job, "read", "runtime"), Json.number(job, "write", "runtime"));
        String side = writes > reads ? "write" : "read";
        Map<Double, Long> points = new LinkedHashMap<>();
        Object percentiles = Json.path(job, side, "lat_ns", "percentile");
        if (percentiles instanceof Map) {
            for (Map.Entry<?, ?> e : ((Map<?, ?>) percentiles).entrySet()) {
                points.put(Double.parseDouble(String.valueOf(e.getKey())), (long) ((Number) e.getValue()).doubleValue());
            }
        }
        long max = (long) Json.number(job, side, "lat_ns", "max");
        double cpuShare = (Json.number(job, "usr_cpu") + Json.number(job, "sys_cpu")) / 100;
        double cpuNs = cpuShare * jobs * runtimeMs * 1e6;
        long requests = (long) (reads + writes);
        long errors = (long) Json.number(job, "error");
        return new BenchResult(name, "fio", "fio", engine(), "-", "-", disk.describe(), w, requests,
                (long) (Json.number(job, "read", "io_bytes") + Json.number(job, "write", "io_bytes")), runtimeMs / 1e3,
                errors, Latency.ofPoints(points, max), cpuNs, "fio process", Double.NaN, java.util.Map.of());
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "fio[%s, batch %d]", engine(), batch);
    }
}
