package io.vblk.perf.report;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

import io.vblk.perf.load.Workload;

/**
 * One measured run: who served the requests, what the guest did, and what it cost. Totals (not
 * rates) are kept so that rounds of the same contender merge exactly.
 *
 * @param name        unique within an invocation; names the result in tables, JSON and files
 * @param mode        embedded, vhost-user, baseline or fio
 * @param target      what served the I/O: vblk, vblk-serve, qemu-storage-daemon, fio, ...
 * @param backend     the I/O back end (io_uring, linux-aio, threads, null, pread, ...)
 * @param waitStrategy the data plane's wait strategy, or "-"
 * @param threading   the data plane's threading mode, or "-"
 * @param device      what was read and written: a path, or null:SIZE
 * @param workload    what the guest did
 * @param requests    requests completed in the measured window
 * @param bytes       data bytes they moved
 * @param seconds     length of the measured window
 * @param errors      requests that completed with an error status
 * @param latency     the guest's view of each request's latency
 * @param cpuNs       CPU time the serving side spent in the window (see {@code cpuScope}); NaN if unknown
 * @param cpuScope    what {@code cpuNs} covers: "data-plane threads", "backend process", ...
 * @param allocBytes  bytes allocated on the data-plane threads in the window; NaN if not measurable
 * @param perIo       event counts per request for diagnosis (guest kicks and sleeps, the device's
 *                    submits and interrupts where visible), by JSON name
 */
public record BenchResult(String name, String mode, String target, String backend, String waitStrategy, String threading,
                          String device, Workload workload, long requests, long bytes, double seconds, long errors,
                          Latency latency, double cpuNs, String cpuScope, double allocBytes,
                          Map<String, Double> perIo) {
    /** Checks the required parts. */
    public BenchResult {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(workload, "workload");
        Objects.requireNonNull(latency, "latency");
        perIo = Map.copyOf(perIo);
    }

    /** Requests per second. */
    public double iops() {
        return seconds > 0 ? requests / seconds : 0;
    }

    /** Megabytes (10^6) per second, as fio's MB/s. */
    public double megabytesPerSecond() {
        return seconds > 0 ? bytes / seconds / 1e6 : 0;
    }

    /** Latency at {@code percentile}, microseconds. */
    public double latencyUs(double percentile) {
        return latency.atPercentile(percentile) / 1e3;
    }

    /** Largest latency, microseconds. */
    public double maxUs() {
        return latency.maxNs() / 1e3;
    }

    /** CPU microseconds per request of the serving side, NaN when unknown. */
    public double cpuUsPerIo() {
        return requests > 0 ? cpuNs / 1e3 / requests : Double.NaN;
    }

    /** Bytes allocated per request on the data-plane threads, NaN when not measurable. */
    public double allocBytesPerIo() {
        return requests > 0 ? allocBytes / requests : Double.NaN;
    }

    /** This result under another name. */
    public BenchResult renamed(String newName) {
        return new BenchResult(newName, mode, target, backend, waitStrategy, threading, device, workload, requests, bytes, seconds,
                errors, latency, cpuNs, cpuScope, allocBytes, perIo);
    }

    /** The per-I/O counts as "name value" pairs for a log line. */
    public String perIoSummary() {
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<String, Double> e : new TreeMap<>(perIo).entrySet()) {
            if (sb.length() > 0) {
                sb.append(", ");
            }
            sb.append(e.getKey().replace("_per_io", "/io")).append(' ').append(String.format(java.util.Locale.ROOT, "%.3f", e.getValue()));
        }
        return sb.toString();
    }

    /** Rounds of one contender as one result: totals summed, distributions merged. */
    public static BenchResult merge(List<BenchResult> rounds) {
        BenchResult first = rounds.get(0);
        if (rounds.size() == 1) {
            return first;
        }
        long requests = 0;
        long bytes = 0;
        long errors = 0;
        double seconds = 0;
        double cpu = 0;
        double alloc = 0;
        List<Latency> latencies = new ArrayList<>();
        Map<String, Double> events = new TreeMap<>();
        for (BenchResult r : rounds) {
            for (Map.Entry<String, Double> e : r.perIo.entrySet()) {
                events.merge(e.getKey(), e.getValue() * r.requests, Double::sum);
            }
            requests += r.requests;
            bytes += r.bytes;
            errors += r.errors;
            seconds += r.seconds;
            cpu += r.cpuNs;
            alloc += r.allocBytes;
            latencies.add(r.latency);
        }
        long total = requests;
        events.replaceAll((k, v) -> total > 0 ? v / total : Double.NaN);
        return new BenchResult(first.name, first.mode, first.target, first.backend, first.waitStrategy, first.threading, first.device,
                first.workload, requests, bytes, seconds, errors, Latency.merge(latencies), cpu, first.cpuScope, alloc, events);
    }
}
