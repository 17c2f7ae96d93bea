package io.vblk.perf.baseline;

import java.util.concurrent.locks.LockSupport;

import org.HdrHistogram.Histogram;

import io.vblk.engine.Interrupt;
import io.vblk.hostmem.GuestMemory;
import io.vblk.perf.load.LoadGenerator;
import io.vblk.perf.load.Contender;
import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.load.GuestQueue;
import io.vblk.perf.load.RunObserver;
import io.vblk.perf.load.ThreadMeter;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.Latency;
import io.vblk.sys.PosixFile;

/**
 * The data-plane-off baseline ({@link LockedBlockDevice}) under the same guest as vblk embedded.
 * The device works on the guest's own thread, so the CPU and allocation metered are that
 * thread's: the guest's share is included (it is small next to a blocking pread).
 */
public final class BaselineContender implements Contender {
    private final DiskSpec disk;

    /** The baseline over {@code disk} (O_DIRECT for a file). */
    public BaselineContender(DiskSpec disk) {
        this.disk = disk;
    }

    @Override
    public String label() {
        return "data plane off";
    }

    @Override
    public BenchResult run(String name, Workload w, RunObserver observer) {
        try (PosixFile file = disk.isNull() ? null : PosixFile.open(disk.path(), !w.rw().writes(), true)) {
            long capacity = (file == null ? disk.nullSizeBytes() : file.sizeBytes()) & ~4095L;
            long perQueue = w.guestBytesPerQueue();
            try (GuestMemory memory = GuestMemory.builder().addMemfd(0, perQueue * w.queues()).build()) {
                LockedBlockDevice device = new LockedBlockDevice(file, capacity, w.queues(), w.queueSize());
                long range = w.rangeBytes() > 0 ? Math.min(w.rangeBytes(), capacity) : capacity;
                GuestQueue[] queues = new GuestQueue[w.queues()];
                for (int q = 0; q < queues.length; q++) {
                    queues[q] = new GuestQueue(q, memory, q * perQueue, perQueue, w, range);
                    device.startQueue(q, memory, queues[q].driver().size(), queues[q].driver().descGpa(),
                            queues[q].driver().availGpa(), queues[q].driver().usedGpa(), w.eventIdx(), Interrupt.NONE);
                }
                // The device completes inside kick(), on this thread: an interrupt never needs to wake
                // it; it only sleeps between the due times of an open loop.
                LoadGenerator guest = new LoadGenerator(queues, device::kick, LockSupport::parkNanos, w);
                Histogram latency = new Histogram(GuestQueue.MAX_LATENCY_NS, 3);
                ThreadMeter meter = ThreadMeter.current();
                LoadGenerator.Stats stats;
                observer.started(name, guest::completedSoFar, w.warmupNs(), w.runtimeNs());
                try {
                    stats = guest.run(w.warmupNs(), w.runtimeNs(), latency, meter);
                } finally {
                    observer.finished();
                }
                return new BenchResult(name, "baseline", "baseline", disk.isNull() ? "null" : "pread", "-", "-",
                        disk.describe(), w, stats.requests(), stats.requests() * w.blockSize(), stats.seconds(), stats.errors(),
                        Latency.of(latency), meter.cpuNs(), "guest thread (device runs on it)", meter.allocatedBytes(),
                        stats.perIo());
            }
        }
    }
}
