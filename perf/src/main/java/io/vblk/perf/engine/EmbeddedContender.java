package io.vblk.perf.engine;

import java.nio.ByteBuffer;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

import org.HdrHistogram.Histogram;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.aio.BackendKind;
import io.vblk.aio.FixedBufferMode;
import io.vblk.aio.Image;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;
import io.vblk.aio.ImageOptions;
import io.vblk.engine.BackendFactory;
import io.vblk.engine.BlkConfig;
import io.vblk.engine.BlkFeatures;
import io.vblk.engine.BlockDevice;
import io.vblk.engine.Interrupt;
import io.vblk.engine.QueueCounters;
import io.vblk.engine.RoundTrace;
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.Tuning;
import io.vblk.engine.WaitStrategy;
import io.vblk.hostmem.DirtyLog;
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

/**
 * vblk's engine in this JVM: a {@link BlockDevice} on a fresh memfd of guest memory, driven by a
 * {@link LoadGenerator} on the calling thread, which kicks with {@link BlockDevice#kick(int)}
 * (a VMM's ioeventfd handler would) and is interrupted by an unpark. CPU and allocation are
 * metered on the device's own threads.
 */
public final class EmbeddedContender implements Contender {
    private static final AtomicInteger SEQUENCE = new AtomicInteger();
    /** Tuning.submitBatch for A/B runs ({@code -Dvblk.bench.submitBatch=N}); default: the engine's. */
    private static final int SUBMIT_BATCH = Integer.getInteger("vblk.bench.submitBatch", Tuning.DEFAULT_SUBMIT_BATCH);
    /**
     * Tuning.fixedBuffers for A/B runs ({@code -Dvblk.bench.fixedBuffers=auto|on|off}); default:
     * the engine's (auto, which registers the benchmark's small memfd with io_uring).
     */
    public static final FixedBufferMode FIXED_BUFFERS = FixedBufferMode.parse(System.getProperty("vblk.bench.fixedBuffers",
            Tuning.defaults().fixedBuffers().cliName()));

    private final DiskSpec disk;
    private final BackendKind backend;
    private final WaitStrategy wait;
    private final ThreadingMode threading;
    private final int ioThreads;
    private boolean dirtyLog;

    /**
     * @param ioThreads I/O threads the queues are spread over round-robin (1: all on one)
     */
    public EmbeddedContender(DiskSpec disk, BackendKind backend, WaitStrategy wait, ThreadingMode threading, int ioThreads) {
        this.disk = disk;
        this.backend = backend;
        this.wait = wait;
        this.threading = threading;
        this.ioThreads = ioThreads;
    }

    /**
     * Runs with dirty logging on (every device write into guest memory marked in a bitmap, as
     * during a live migration): the cost of logging.
     */
    public EmbeddedContender dirtyLog(boolean value) {
        dirtyLog = value;
        return this;
    }

    /** The device's own counters over the measured window, summed over its queues. */
    private static final class DeviceCounters {
        private static final int[] COUNTED = {QueueCounters.SUBMITS, QueueCounters.BATCHES, QueueCounters.INTERRUPTS, QueueCounters.KICKS};
        private static final String[] NAMES = {"device_submits_per_io", "device_batches_per_io", "device_interrupts_per_io",
            "device_kicks_per_io"};
        private final BlockDevice device;
        private final long[] at = new long[COUNTED.length];

        DeviceCounters(BlockDevice device) {
            this.device = device;
        }

        void begin() {
            for (int i = 0; i < COUNTED.length; i++) {
                at[i] = sum(COUNTED[i]);
            }
        }

        void end() {
            for (int i = 0; i < COUNTED.length; i++) {
                at[i] = sum(COUNTED[i]) - at[i];
            }
        }

        Map<String, Double> perIo(long requests) {
            Map<String, Double> m = new TreeMap<>();
            for (int i = 0; i < COUNTED.length; i++) {
                m.put(NAMES[i], requests > 0 ? at[i] / (double) requests : Double.NaN);
            }
            return m;
        }

        private long sum(int counter) {
            long n = 0;
            for (int q = 0; q < device.numQueues(); q++) {
                n += device.counters(q).get(counter);
            }
            return n;
        }
    }

    @Override
    public String label() {
        return "vblk embedded (" + backend + ", " + wait.cliName() + (dirtyLog ? ", dirty log" : "") + ")";
    }

    @Override
    public BenchResult run(String name, Workload w, RunObserver observer) {
        String prefix = "vblk-bench-" + SEQUENCE.incrementAndGet();
        if (disk.isNetwork()) {
            return runNetwork(name, w, observer, prefix);
        }
        try (Image image = disk.isNull() || disk.isQcow2() ? null
                : Image.open(disk.path(), ImageOptions.defaults().direct(true).readOnly(!w.rw().writes()))) {
            long capacity = (disk.isQcow2() ? Qcow2.virtualSize(disk.path())
                    : image == null ? disk.nullSizeBytes() : image.sizeBytes()) & ~4095L;
            BlkConfig config = BlkConfig.builder(capacity).queueSize(w.queueSize()).numQueues(w.queues())
                    .blockSize(image == null ? 512 : Math.min(4096, image.logicalBlockSize()))
                    .readOnly(!w.rw().writes()).build(); // a read-only image needs a read-only config (Builder.build checks)
            Tuning tuning = Tuning.builder().waitStrategy(wait).threadingMode(threading).submitBatch(SUBMIT_BATCH)
                    .fixedBuffers(FIXED_BUFFERS)
                    .threads(Math.min(ioThreads, w.queues()), w.queues()).recordLatency(false).build();
            long perQueue = w.guestBytesPerQueue();
            BlockDevice.Builder builder = BlockDevice.builder(config, BackendFactory.of(backend, image))
                    .tuning(tuning).name(prefix);
            if (disk.isQcow2()) {
                builder.drivers(Qcow2.factory(disk.path(), backend, Qcow2Options.defaults().readOnly(!w.rw().writes())));
            }
            try (GuestMemory memory = GuestMemory.builder().addMemfd(0, perQueue * w.queues()).build();
                 BlockDevice device = builder.memory(memory).build()) {
                return measure(name, w, observer, prefix, capacity, config, perQueue, memory, device);
            }
        }
    }

    /** A network disk: one driver per I/O thread from its address (the back-end choice does not apply). */
    private BenchResult runNetwork(String name, Workload w, RunObserver observer, String prefix) {
        io.vblk.block.NetworkDisk net = io.vblk.block.NetworkDisk.open(disk.network(), !w.rw().writes());
        long capacity = net.sizeBytes() & ~4095L;
        BlkConfig config = BlkConfig.builder(capacity).queueSize(w.queueSize()).numQueues(w.queues())
                .readOnly(net.readOnly()).build();
        Tuning tuning = Tuning.builder().waitStrategy(wait).threadingMode(threading)
                .threads(Math.min(ioThreads, w.queues()), w.queues()).recordLatency(false).build();
        long perQueue = w.guestBytesPerQueue();
        try (GuestMemory memory = GuestMemory.builder().addMemfd(0, perQueue * w.queues()).build();
             BlockDevice device = BlockDevice.builder(config, BackendFactory.of(BackendKind.NULL, null))
                     .drivers(net).memory(memory).tuning(tuning).name(prefix).build()) {
            return measure(name, w, observer, prefix, capacity, config, perQueue, memory, device);
        }
    }

    private BenchResult measure(String name, Workload w, RunObserver observer, String prefix, long capacity, BlkConfig config,
                                long perQueue, GuestMemory memory, BlockDevice device) {
        long features = config.offeredFeatures();
        if (!w.eventIdx()) {
            features &= ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX);
        }
        device.negotiate(features);
        if (dirtyLog) {
            int bytes = (int) DirtyLog.bitmapBytes(perQueue * w.queues());
            device.startDirtyLog(new UnsafeBuffer(ByteBuffer.allocateDirect(bytes)));
        }
        Thread guestThread = Thread.currentThread();
        Interrupt interrupt = () -> {
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.INTERRUPT, 0);
            }
            LockSupport.unpark(guestThread);
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.INTERRUPT_END, 0);
            }
        };
        long range = w.rangeBytes() > 0 ? Math.min(w.rangeBytes(), capacity) : capacity;
        GuestQueue[] queues = new GuestQueue[w.queues()];
        for (int q = 0; q < queues.length; q++) {
            queues[q] = new GuestQueue(q, memory, q * perQueue, perQueue, w, range);
            device.configureQueue(q, queues[q].driver().size(), queues[q].driver().descGpa(), queues[q].driver().availGpa(),
                    queues[q].driver().usedGpa());
            device.setInterrupt(q, interrupt);
        }
        for (int q = 0; q < queues.length; q++) {
            device.startQueue(q);
        }
        LoadGenerator guest = new LoadGenerator(queues, device::kick, LockSupport::parkNanos, w);
        Histogram latency = new Histogram(GuestQueue.MAX_LATENCY_NS, 3);
        ThreadMeter threads = ThreadMeter.named(prefix + "-io");
        // The guest (the load generator on this thread) is not part of the device's CPU, but it
        // shares the machine's cores with it: a second thread fio does not have.
        ThreadMeter guestCpu = ThreadMeter.current();
        DeviceCounters counters = new DeviceCounters(device);
        LoadGenerator.Stats stats;
        OccupancySampler occupancy = w.rateIops() > 0 ? null : new OccupancySampler(device, queues, w.depth(), prefix + "-sampler");
        if (occupancy != null) {
            occupancy.start();
        }
        observer.started(name, guest::completedSoFar, w.warmupNs(), w.runtimeNs());
        try {
            stats = guest.run(w.warmupNs(), w.runtimeNs(), latency, new LoadGenerator.Meter() {
                @Override
                public void begin() {
                    guestCpu.begin();
                    threads.begin();
                    counters.begin();
                    if (occupancy != null) {
                        occupancy.measuring(true);
                    }
                    RoundTrace.recording(true);
                }

                @Override
                public void end() {
                    RoundTrace.recording(false);
                    if (occupancy != null) {
                        occupancy.measuring(false);
                    }
                    threads.end();
                    counters.end();
                    guestCpu.end();
                }
            });
        } finally {
            observer.finished();
            if (occupancy != null) {
                occupancy.close();
            }
        }
        if (RoundTrace.ON) {
            // The measured window's timeline (-Dvblk.roundTrace=true), for scripts/round-trace-report.
            RoundTrace.dump(java.nio.file.Path.of(System.getProperty("vblk.roundTrace.file",
                    System.getProperty("java.io.tmpdir") + "/vblk-round-trace-" + name + ".txt")));
        }
        device.stop();
        Map<String, Double> perIo = new TreeMap<>(stats.perIo());
        perIo.putAll(counters.perIo(stats.requests()));
        if (occupancy != null) {
            occupancy.report(perIo);
        }
        // 1 when every I/O thread registered the guest memory as fixed buffers (io_uring, auto).
        perIo.put("device_fixed_buffers", device.fixedBuffers().contains(": registered ") ? 1.0 : 0.0);
        perIo.put("guest_cpu_us_per_io", stats.requests() > 0 ? guestCpu.cpuNs() / 1e3 / stats.requests() : Double.NaN);
        return new BenchResult(name, "embedded", "vblk", backend.cliName(), wait.cliName(),
                threading.name().toLowerCase(Locale.ROOT), disk.describe(), w, stats.requests(),
                stats.requests() * w.blockSize(), stats.seconds(), stats.errors(), Latency.of(latency), threads.cpuNs(),
                "data-plane threads", threads.allocatedBytes(), perIo);
    }
}
