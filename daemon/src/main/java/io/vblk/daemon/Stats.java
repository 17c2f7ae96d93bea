package io.vblk.daemon;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import io.vblk.engine.BlockDevice;
import io.vblk.engine.LatencySummary;
import io.vblk.engine.QueueCounters;

/**
 * {@code export.stats}: every counter of every queue, in flight, and latency percentiles. Reads
 * the counters with volatile loads and the latency histogram in place: the data plane is never
 * stopped or slowed to be observed.
 */
final class Stats {
    private static final int[] COUNTERS = {QueueCounters.REQUESTS, QueueCounters.COMPLETIONS, QueueCounters.BYTES,
        QueueCounters.READ_BYTES, QueueCounters.WRITE_BYTES,
        QueueCounters.ERRORS, QueueCounters.UNSUPPORTED, QueueCounters.BATCHES, QueueCounters.SUBMITS, QueueCounters.KICKS,
        QueueCounters.INTERRUPTS, QueueCounters.INTERRUPTS_SUPPRESSED, QueueCounters.QUARANTINES, QueueCounters.LOST, QueueCounters.THROTTLED,
        QueueCounters.READS, QueueCounters.WRITES, QueueCounters.FLUSHES, QueueCounters.DISCARDS, QueueCounters.WRITE_ZEROES};

    private Stats() {
    }

    static Map<String, Object> of(Export e, boolean resetLatency) {
        BlockDevice d = e.device();
        List<Object> queues = new ArrayList<>();
        for (int q = 0; q < d.numQueues(); q++) {
            queues.add(queue(d, q, resetLatency));
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", e.spec.id);
        m.put("size_bytes", d.config().capacitySectors() * 512);
        m.put("queues", queues);
        // Drains waiting past 10 s on a back end that does not complete what is in flight.
        m.put("stalled_control_calls", d.stalledControlCalls());
        m.put("frontend", e.frontendInfo()); // null: no VM attached
        m.put("socket_missing", e.checkSocket()); // removed or replaced under it: no frontend can connect
        return m;
    }

    static Map<String, Object> queue(BlockDevice d, int q, boolean resetLatency) {
        QueueCounters c = d.counters(q);
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("queue", q);
        m.put("state", d.isBroken(q) ? "quarantined" : d.isRunning(q) ? "running" : "stopped");
        // Completions are read first: a request counted complete was counted popped before it.
        long completions = c.get(QueueCounters.COMPLETIONS);
        long requests = c.get(QueueCounters.REQUESTS);
        for (int counter : COUNTERS) {
            m.put(QueueCounters.name(counter), counter == QueueCounters.COMPLETIONS ? completions
                    : counter == QueueCounters.REQUESTS ? requests : c.get(counter));
        }
        m.put("in_flight", Math.max(0, requests - completions));
        LatencySummary h = d.latencySummary(q);
        if (resetLatency) {
            d.resetLatency(q);
        }
        Map<String, Object> lat = new LinkedHashMap<>();
        lat.put("count", h.count());
        lat.put("p50_us", micros(h.p50Ns()));
        lat.put("p99_us", micros(h.p99Ns()));
        lat.put("p99_9_us", micros(h.p999Ns()));
        lat.put("max_us", micros(h.maxNs()));
        m.put("latency", lat);
        if (d.isBroken(q)) {
            m.put("quarantine_reason", d.brokenReason(q));
        }
        return m;
    }

    private static double micros(long ns) {
        return Math.round(ns / 10.0) / 100.0;
    }
}
