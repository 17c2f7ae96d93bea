package io.vblk.perf.engine;

import java.util.Map;
import java.util.concurrent.locks.LockSupport;

import org.agrona.UnsafeApi;

import io.vblk.engine.BlockDevice;
import io.vblk.engine.QueueCounters;
import io.vblk.perf.load.GuestQueue;
import io.vblk.testkit.SplitQueueDriver;

/**
 * Where a closed loop's requests are, sampled about every {@link #PERIOD_NS} by a thread of its
 * own while the measured window runs: time averages of how many sit with the guest (reaped or
 * re-issued and not yet published), in the avail ring not yet popped, with the device (popped
 * and not finished: prepared, in the kernel, or finished by the kernel and not yet reaped), finished
 * and not yet published in used.idx, and published in the used ring but not yet reaped by the
 * guest. Only requests the device holds can be on the disk: the rest is the hand-over between
 * the guest's thread and the I/O thread (fio, one thread, has none).
 *
 * <p>The indices are read racily from another thread (a plain read of the driver's last used
 * index, the device's counters, both rings' published indices): each sample may be off by a
 * batch in flight between two reads, which averages out over thousands of samples. A sample
 * costs a few loads and one timed park: about 1,000 wake-ups a second, negligible next to
 * hundreds of thousands of I/Os.
 */
final class OccupancySampler implements AutoCloseable {
    /** The sampling period. */
    static final long PERIOD_NS = 1_000_000L;
    /** A sample whose reads took longer than this was interrupted: dropped. */
    static final long MAX_SAMPLE_NS = 20_000L;

    private final BlockDevice device;
    private final GuestQueue[] queues;
    private final long[] publishedAvail;
    private final int depth;
    private final Thread thread;
    private volatile boolean running;
    private volatile boolean measuring;
    private long samples;
    private long dropped;
    private long guest;
    private long avail;
    private long atDevice;
    private long unpublished;
    private long used;

    OccupancySampler(BlockDevice device, GuestQueue[] queues, int depth, String name) {
        this.device = device;
        this.queues = queues.clone();
        this.publishedAvail = new long[queues.length];
        this.depth = depth;
        for (int q = 0; q < queues.length; q++) {
            SplitQueueDriver d = queues[q].driver();
            publishedAvail[q] = d.hostAddress(d.availGpa() + 2, 2);
        }
        this.thread = new Thread(this::run, name);
        thread.setDaemon(true);
    }

    void start() {
        running = true;
        thread.start();
    }

    /** Starts (or stops) counting samples: the measured window. */
    void measuring(boolean value) {
        measuring = value;
    }

    private void run() {
        while (running) {
            LockSupport.parkNanos(PERIOD_NS);
            if (measuring) {
                sample();
            }
        }
    }

    private void sample() {
        for (int q = 0; q < queues.length; q++) {
            SplitQueueDriver d = queues[q].driver();
            QueueCounters c = device.counters(q);
            // Downstream first: each index read later belongs to an earlier stage, which can only
            // have moved on meanwhile, so no difference comes out negative. A sample the sampler
            // was preempted in the middle of is dropped.
            long start = System.nanoTime();
            int lastUsed = d.lastUsed();
            int usedIdx = d.usedIdx();
            int completed = (int) c.get(QueueCounters.COMPLETIONS) & 0xffff;
            int popped = (int) c.get(QueueCounters.REQUESTS) & 0xffff;
            int published = UnsafeApi.getShortVolatile(null, publishedAvail[q]) & 0xffff;
            if (System.nanoTime() - start > MAX_SAMPLE_NS) {
                dropped++;
                return;
            }
            int outstanding = distance(lastUsed, published);
            guest += Math.max(0, depth - outstanding);
            avail += distance(popped, published);
            atDevice += distance(completed, popped);
            unpublished += distance(usedIdx, completed);
            used += distance(lastUsed, usedIdx);
        }
        samples++;
    }

    /** {@code to - from} on 16-bit ring indices, 0 when {@code to} is behind. */
    private static int distance(int from, int to) {
        int d = (short) (to - from);
        return Math.max(0, d);
    }

    /** Stops the thread and adds the averages (per queue) to {@code perIo}. */
    void report(Map<String, Double> perIo) {
        close();
        double n = Math.max(1, samples) * queues.length;
        perIo.put("occ_samples", (double) samples);
        perIo.put("occ_dropped", (double) dropped);
        perIo.put("occ_guest", guest / n);
        perIo.put("occ_avail", avail / n);
        perIo.put("occ_device", atDevice / n);
        perIo.put("occ_unpublished", unpublished / n);
        perIo.put("occ_used", used / n);
    }

    @Override
    public void close() {
        running = false;
        LockSupport.unpark(thread);
        try {
            thread.join(1000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
