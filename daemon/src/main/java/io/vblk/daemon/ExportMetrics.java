package io.vblk.daemon;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import io.prometheus.metrics.model.registry.MultiCollector;
import io.prometheus.metrics.model.snapshots.CounterSnapshot;
import io.prometheus.metrics.model.snapshots.CounterSnapshot.CounterDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.ClassicHistogramBuckets;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot.GaugeDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot.HistogramDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.Labels;
import io.prometheus.metrics.model.snapshots.MetricSnapshots;
import io.prometheus.metrics.model.snapshots.Quantile;
import io.prometheus.metrics.model.snapshots.Quantiles;
import io.prometheus.metrics.model.snapshots.SummarySnapshot;
import io.prometheus.metrics.model.snapshots.SummarySnapshot.SummaryDataPointSnapshot;
import io.prometheus.metrics.model.snapshots.Unit;

import io.vblk.engine.BlockDevice;
import io.vblk.engine.LatencyBuckets;
import io.vblk.engine.LatencySummary;
import io.vblk.engine.SharedIoThread;
import io.vblk.engine.QueueCounters;

/**
 * The exports' counters as Prometheus metrics, named in the style of node_exporter's disk
 * metrics ({@code node_disk_io_now}, {@code node_disk_read_bytes_total},
 * {@code node_disk_written_bytes_total}) with a {@code vblk_} prefix and labels {@code export}
 * and {@code queue}. Built from the live counters at each
 * scrape, so nothing is recorded twice.
 */
final class ExportMetrics implements MultiCollector {
    private static final double NS_PER_SECOND = 1e9;
    /** The latency histogram's bucket bounds in seconds, the last one +Inf. */
    private static final double[] BOUNDS_SECONDS = boundsSeconds();

    private static double[] boundsSeconds() {
        long[] ns = LatencyBuckets.boundsNs();
        double[] s = new double[ns.length + 1];
        for (int i = 0; i < ns.length; i++) {
            s[i] = ns[i] / NS_PER_SECOND;
        }
        s[ns.length] = Double.POSITIVE_INFINITY;
        return s;
    }

    private final Daemon daemon;

    ExportMetrics(Daemon daemon) {
        this.daemon = daemon;
    }

    /** One counter metric: its name (without _total), help, and which queue counter it reads. */
    private record CounterMetric(String name, String help, int counter, Unit unit) {
    }

    private static final List<CounterMetric> COUNTERS = List.of(
            new CounterMetric("vblk_disk_requests", "Requests popped from the virtqueue.", QueueCounters.REQUESTS, null),
            new CounterMetric("vblk_disk_requests_completed", "Requests completed and pushed to the used ring.",
                    QueueCounters.COMPLETIONS, null),
            new CounterMetric("vblk_disk_bytes", "Data bytes of requests popped, of every type: reads, writes and the ranges"
                    + " of discard and write-zeroes requests (vblk_disk_read_bytes and vblk_disk_written_bytes by direction).",
                    QueueCounters.BYTES, Unit.BYTES),
            new CounterMetric("vblk_disk_read_bytes", "Data bytes of read requests popped (from the disk into guest memory).",
                    QueueCounters.READ_BYTES, Unit.BYTES),
            new CounterMetric("vblk_disk_written_bytes", "Data bytes of write requests popped (from guest memory to the disk).",
                    QueueCounters.WRITE_BYTES, Unit.BYTES),
            new CounterMetric("vblk_disk_reads", "Read requests popped.", QueueCounters.READS, null),
            new CounterMetric("vblk_disk_writes", "Write requests popped.", QueueCounters.WRITES, null),
            new CounterMetric("vblk_disk_flushes", "Flush requests popped.", QueueCounters.FLUSHES, null),
            new CounterMetric("vblk_disk_discards", "Discard requests popped.", QueueCounters.DISCARDS, null),
            new CounterMetric("vblk_disk_write_zeroes", "Write-zeroes requests popped.", QueueCounters.WRITE_ZEROES, null),
            new CounterMetric("vblk_disk_errors", "Requests completed with VIRTIO_BLK_S_IOERR.", QueueCounters.ERRORS, null),
            new CounterMetric("vblk_disk_unsupported", "Requests completed with VIRTIO_BLK_S_UNSUPP.",
                    QueueCounters.UNSUPPORTED, null),
            new CounterMetric("vblk_disk_quarantines", "Times the queue was quarantined for a corrupt ring.",
                    QueueCounters.QUARANTINES, null),
            new CounterMetric("vblk_disk_lost", "Requests a quarantined queue gave up: a guest-memory fault lost their completion.",
                    QueueCounters.LOST, null),
            new CounterMetric("vblk_disk_throttled", "Pop passes held back by the IOPS or bandwidth limit.",
                    QueueCounters.THROTTLED, null),
            new CounterMetric("vblk_disk_kicks", "Guest notifications received.", QueueCounters.KICKS, null),
            new CounterMetric("vblk_disk_interrupts", "Interrupts signalled to the guest.", QueueCounters.INTERRUPTS, null));

    @Override
    public MetricSnapshots collect() {
        List<Export> exports = daemon.exports();
        List<CounterSnapshot.Builder> counters = new ArrayList<>();
        for (CounterMetric m : COUNTERS) {
            CounterSnapshot.Builder b = CounterSnapshot.builder().name(m.name()).help(m.help());
            if (m.unit() != null) {
                b.unit(m.unit());
            }
            counters.add(b);
        }
        GaugeSnapshot.Builder inFlight = GaugeSnapshot.builder().name("vblk_disk_io_now")
                .help("Requests in flight (popped, not yet completed).");
        GaugeSnapshot.Builder size = GaugeSnapshot.builder().name("vblk_disk_size_bytes").help("Capacity of the export.");
        SummarySnapshot.Builder latency = SummarySnapshot.builder().name("vblk_disk_request_duration_seconds")
                .help("Deprecated (quantiles since start or the last stats reset, which cannot be aggregated):"
                        + " use vblk_disk_request_latency_seconds. Request latency, popped to pushed.");
        HistogramSnapshot.Builder latencyHistogram = HistogramSnapshot.builder().name("vblk_disk_request_latency_seconds")
                .unit(Unit.SECONDS)
                .help("Request latency, popped to pushed, since the queue was built (bucket bounds within 1%).");
        GaugeSnapshot.Builder stalled = GaugeSnapshot.builder().name("vblk_disk_stalled_control_calls")
                .help("Control calls (a ring's drain) waiting more than 10 s for the back end to complete requests in flight.");
        GaugeSnapshot.Builder frontend = GaugeSnapshot.builder().name("vblk_disk_frontend_connected")
                .help("1 while a frontend (a VM) is connected to the export and served, else 0.");
        GaugeSnapshot.Builder socketMissing = GaugeSnapshot.builder().name("vblk_disk_socket_missing")
                .help("1 when the export's socket file (or its directory) was removed or replaced under it: it listens, but no"
                        + " frontend can connect (export.rebind, or the daemon's next check, listens there again); else 0.");
        for (Export e : exports) {
            BlockDevice d = e.device();
            socketMissing.dataPoint(GaugeDataPointSnapshot.builder().labels(Labels.of("export", e.spec.id))
                    .value(e.checkSocket() ? 1 : 0).build());
            frontend.dataPoint(GaugeDataPointSnapshot.builder().labels(Labels.of("export", e.spec.id))
                    .value(e.frontend() != null ? 1 : 0).build());
            stalled.dataPoint(GaugeDataPointSnapshot.builder().labels(Labels.of("export", e.spec.id))
                    .value(d.stalledControlCalls()).build());
            size.dataPoint(GaugeDataPointSnapshot.builder().labels(Labels.of("export", e.spec.id))
                    .value(d.config().capacitySectors() * 512.0).build());
            for (int q = 0; q < d.numQueues(); q++) {
                Labels labels = Labels.of("export", e.spec.id, "queue", Integer.toString(q));
                QueueCounters c = d.counters(q);
                long completions = c.get(QueueCounters.COMPLETIONS);
                long requests = c.get(QueueCounters.REQUESTS);
                for (int i = 0; i < COUNTERS.size(); i++) {
                    counters.get(i).dataPoint(CounterDataPointSnapshot.builder().labels(labels)
                            .value(c.get(COUNTERS.get(i).counter())).build());
                }
                inFlight.dataPoint(GaugeDataPointSnapshot.builder().labels(labels)
                        .value(Math.max(0, requests - completions)).build());
                LatencySummary h = d.latencySummary(q);
                Quantiles quantiles = Quantiles.of(
                        new Quantile(0.5, h.p50Ns() / NS_PER_SECOND),
                        new Quantile(0.99, h.p99Ns() / NS_PER_SECOND),
                        new Quantile(0.999, h.p999Ns() / NS_PER_SECOND));
                latency.dataPoint(SummaryDataPointSnapshot.builder().labels(labels).quantiles(quantiles)
                        .count(h.count()).sum(h.meanNs() * h.count() / NS_PER_SECOND).build());
                LatencyBuckets b = d.latencyBuckets(q);
                latencyHistogram.dataPoint(HistogramDataPointSnapshot.builder().labels(labels)
                        .classicHistogramBuckets(ClassicHistogramBuckets.of(BOUNDS_SECONDS, b.counts()))
                        .sum(b.sumNs() / NS_PER_SECOND).build());
            }
        }
        MetricSnapshots.Builder all = MetricSnapshots.builder();
        for (CounterSnapshot.Builder b : counters) {
            all.metricSnapshot(b.build());
        }
        all.metricSnapshot(inFlight.build());
        all.metricSnapshot(size.build());
        all.metricSnapshot(stalled.build());
        all.metricSnapshot(frontend.build());
        all.metricSnapshot(socketMissing.build());
        all.metricSnapshot(latency.build());
        all.metricSnapshot(latencyHistogram.build());
        GaugeSnapshot.Builder busy = GaugeSnapshot.builder().name("vblk_iothread_busy_ratio")
                .help("Fraction of the recent past (10 to 20 s when scraped every few seconds) a shared I/O thread was"
                        + " awake (rounds and polling) rather than asleep in epoll.");
        CounterSnapshot.Builder busySeconds = CounterSnapshot.builder().name("vblk_iothread_busy_seconds").unit(Unit.SECONDS)
                .help("Time a shared I/O thread was awake (rounds and polling) since it started: rate() of it is its busy"
                        + " fraction over any window.");
        for (Map.Entry<String, SharedIoThread> t : daemon.sharedIoThreads().entrySet()) {
            Labels labels = Labels.of("iothread", t.getKey());
            busy.dataPoint(GaugeDataPointSnapshot.builder().labels(labels).value(t.getValue().busyFraction()).build());
            busySeconds.dataPoint(CounterDataPointSnapshot.builder().labels(labels)
                    .value(t.getValue().busyNanos() / NS_PER_SECOND).build());
        }
        all.metricSnapshot(busy.build());
        all.metricSnapshot(busySeconds.build());
        all.metricSnapshot(GaugeSnapshot.builder().name("vblk_daemon_ready")
                .help("0 while the daemon opens the exports of its configuration file at start (the series of the exports"
                        + " opened so far are shown), 1 once it is ready.")
                .dataPoint(GaugeDataPointSnapshot.builder().value(daemon.isReady() ? 1 : 0).build()).build());
        all.metricSnapshot(GaugeSnapshot.builder().name("vblk_build_info")
                .help("Always 1; the labels say which vblk and Java runs.")
                .dataPoint(GaugeDataPointSnapshot.builder()
                        .labels(Labels.of("version", Version.VBLK, "java", Runtime.version().toString())).value(1).build())
                .build());
        all.metricSnapshot(CounterSnapshot.builder().name("vblk_image_locks_kept")
                .help("Exports closed with the image's locks kept: a back end did not close drained, so the locks last until the"
                        + " kernel lets go of the file.")
                .dataPoint(CounterDataPointSnapshot.builder().value(daemon.locksKeptCount()).build()).build());
        all.metricSnapshot(GaugeSnapshot.builder().name("vblk_undrained_backends")
                .help("Back ends closed with operations the kernel has not finished (a hung FUSE or NFS file, a frozen disk):"
                        + " each keeps its buffers, and its export the guest memory, until the kernel does.")
                .dataPoint(GaugeDataPointSnapshot.builder().value(io.vblk.aio.IoBackends.undrainedBackends()).build()).build());
        all.metricSnapshot(GaugeSnapshot.builder().name("vblk_config_persist_failing")
                .help("1 while the last write of the --persist configuration file failed: changes since are in effect but a"
                        + " restart would lose them (config.status says why); else 0.")
                .dataPoint(GaugeDataPointSnapshot.builder().value(daemon.configFile().failing() ? 1 : 0).build()).build());
        all.metricSnapshot(GaugeSnapshot.builder().name("vblk_config_entries_failed")
                .help("Entries of the --persist configuration file (exports, I/O threads) that failed at start and are kept"
                        + " in the file, not served (config.status says why; export.add of the id or config.retry adds one,"
                        + " export.remove drops it).")
                .dataPoint(GaugeDataPointSnapshot.builder().value(daemon.failedEntries()).build()).build());
        all.metricSnapshot(CounterSnapshot.builder().name("vblk_config_persist_failures")
                .help("Writes of the --persist configuration file that failed.")
                .dataPoint(CounterDataPointSnapshot.builder().value(daemon.configFile().failures()).build()).build());
        return all.build();
    }
}
