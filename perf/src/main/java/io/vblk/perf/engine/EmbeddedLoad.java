package io.vblk.perf.engine;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.LockSupport;

import org.HdrHistogram.Histogram;
import org.agrona.UnsafeApi;

import io.vblk.engine.BlkRequestDescriptor;
import io.vblk.engine.BlockDevice;
import io.vblk.engine.Interrupt;
import io.vblk.hostmem.GuestMemory;
import io.vblk.vring.SplitQueueDriver;

/**
 * A closed-loop guest for an embedded {@link BlockDevice}: one driver thread keeps
 * {@code depth} requests in flight on queue 0 with {@link SplitQueueDriver}, kicks through
 * {@link BlockDevice#kick(int)} only when the device asks (as a VMM's vCPU exit would), and waits
 * for completions by polling briefly and then parking until the device's interrupt callback
 * unparks it. Latency is measured per request by the guest, from publish to reap.
 */
public final class EmbeddedLoad {
    private static final int SPINS_BEFORE_PARK = 200;

    /** What one run measured. */
    public record Result(long requests, double seconds, Histogram latencyNs, long deviceCpuNs, long deviceAllocatedBytes) {
        public double iops() {
            return requests / seconds;
        }

        public double cpuNsPerIo() {
            return requests == 0 ? 0 : deviceCpuNs / (double) requests;
        }

        public double allocatedBytesPerIo() {
            return requests == 0 ? 0 : deviceAllocatedBytes / (double) requests;
        }
    }

    private final BlockDevice device;
    private final SplitQueueDriver driver;
    private final int depth;
    private final int blockSize;
    private final int type;
    private final long capacityBlocks;
    private final long[] headerGpa;
    private final long[] headerHost;
    private final long[] status;
    private final long[] data;
    private final long[] issuedAt;
    private final int[] slotOfHead;
    private final long[] gpas = new long[3];
    private final int[] lengths = new int[3];
    private final boolean[] writable = new boolean[3];
    private volatile Thread waiter;
    private boolean driverPolls;
    private long seed = 0x9E3779B97F4A7C15L;

    /**
     * Lays out queue 0 of {@code device} in {@code memory} at {@code areaGpa} and configures it.
     *
     * @param type {@link BlkRequestDescriptor#T_IN} or {@link BlkRequestDescriptor#T_OUT}
     */
    public EmbeddedLoad(BlockDevice device, GuestMemory memory, long areaGpa, long areaBytes, int queueSize,
                        int depth, int blockSize, int type, boolean eventIdx) {
        this.device = device;
        this.depth = depth;
        this.blockSize = blockSize;
        this.type = type;
        this.capacityBlocks = device.config().capacitySectors() * 512 / blockSize;
        this.driver = SplitQueueDriver.builder(memory).size(queueSize).eventIdx(eventIdx).area(areaGpa, areaBytes).build();
        headerGpa = new long[depth];
        headerHost = new long[depth];
        status = new long[depth];
        data = new long[depth];
        issuedAt = new long[depth];
        slotOfHead = new int[queueSize];
        for (int s = 0; s < depth; s++) {
            headerGpa[s] = driver.allocate(16, 16);
            headerHost[s] = driver.hostAddress(headerGpa[s], 16);
            status[s] = driver.allocate(1, 1);
            data[s] = driver.allocate(blockSize, 4096);
        }
        device.setInterrupt(0, this::onInterrupt);
        device.configureQueue(0, queueSize, driver.descGpa(), driver.availGpa(), driver.usedGpa());
    }

    private void onInterrupt() {
        Thread t = waiter;
        if (t != null) {
            LockSupport.unpark(t);
        }
    }

    /**
     * Whether the guest driver busy-polls the used ring (interrupts suppressed, as a polling
     * driver or io_uring-style hipri I/O does) instead of sleeping until interrupted.
     */
    public EmbeddedLoad driverPolls(boolean value) {
        driverPolls = value;
        if (value) {
            driver.disableInterrupts();
        }
        return this;
    }

    /** An interrupt that goes to this load's driver thread. */
    public Interrupt interrupt() {
        return this::onInterrupt;
    }

    /** Runs for {@code warmUpNs}, then measures for {@code runNs}; on the calling thread. */
    public Result run(long warmUpNs, long runNs, String deviceThreadPrefix) {
        Histogram latency = new Histogram(60_000_000_000L, 3);
        for (int s = 0; s < depth; s++) {
            issue(s);
        }
        kickIfAsked();
        loop(System.nanoTime() + warmUpNs, null);
        List<Thread> plane = threads(deviceThreadPrefix);
        com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long cpu0 = cpu(mx, plane);
        long alloc0 = allocated(mx, plane);
        long start = System.nanoTime();
        long requests = loop(start + runNs, latency);
        double seconds = (System.nanoTime() - start) / 1e9;
        long cpu = cpu(mx, plane) - cpu0;
        long alloc = allocated(mx, plane) - alloc0;
        drain();
        return new Result(requests, seconds, latency, cpu, alloc);
    }

    private long loop(long endNs, Histogram latency) {
        long completed = 0;
        int idle = 0;
        long lastProgressNs = System.nanoTime();
        waiter = Thread.currentThread();
        while (true) {
            int head = driver.reap();
            if (head >= 0) {
                int s = slotOfHead[head];
                long now = System.nanoTime();
                if (latency != null) {
                    latency.recordValue(Math.min(now - issuedAt[s], 60_000_000_000L));
                }
                completed++;
                idle = 0;
                lastProgressNs = now;
                issue(s);
                if (now >= endNs) {
                    return completed;
                }
                continue;
            }
            if (head != SplitQueueDriver.NONE) {
                throw new IllegalStateException("device corrupted the used ring: " + head);
            }
            kickIfAsked();
            if (driverPolls || ++idle < SPINS_BEFORE_PARK) {
                Thread.onSpinWait();
            } else if (!driver.enableInterrupts()) {
                LockSupport.parkNanos(1_000_000);
                driver.disableInterrupts();
                if (System.nanoTime() - lastProgressNs > 5_000_000_000L) {
                    throw new IllegalStateException("no completion for 5 s: " + driver + ", avail_event "
                            + driver.availEvent() + ", device " + device.queueState(0) + " " + device.counters(0));
                }
            }
        }
    }

    private void drain() {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (driver.outstanding() > 0 && System.nanoTime() < deadline) {
            if (driver.reap() < 0) {
                kickIfAsked();
                LockSupport.parkNanos(10_000);
            }
        }
    }

    private void kickIfAsked() {
        if (driver.publishAvail()) {
            device.kick(0);
        }
    }

    private void issue(int s) {
        long block = nextRandom() % capacityBlocks;
        UnsafeApi.putInt(headerHost[s], type);
        UnsafeApi.putInt(headerHost[s] + 4, 0);
        UnsafeApi.putLong(headerHost[s] + 8, block * (blockSize / 512));
        gpas[0] = headerGpa[s];
        gpas[1] = data[s];
        gpas[2] = status[s];
        lengths[0] = 16;
        lengths[1] = blockSize;
        lengths[2] = 1;
        writable[0] = false;
        writable[1] = type == BlkRequestDescriptor.T_IN;
        writable[2] = true;
        int head = driver.addDirect(gpas, lengths, writable, 3);
        if (head < 0) {
            throw new IllegalStateException("queue full: depth " + depth + " needs " + 3 * depth + " descriptors");
        }
        slotOfHead[head] = s;
        issuedAt[s] = System.nanoTime();
    }

    private long nextRandom() {
        seed ^= seed << 13;
        seed ^= seed >>> 7;
        seed ^= seed << 17;
        return seed & Long.MAX_VALUE;
    }

    private static List<Thread> threads(String prefix) {
        List<Thread> found = new ArrayList<>();
        for (Thread t : Thread.getAllStackTraces().keySet()) {
            if (t.getName().startsWith(prefix)) {
                found.add(t);
            }
        }
        return found;
    }

    private static long cpu(java.lang.management.ThreadMXBean mx, List<Thread> threads) {
        long sum = 0;
        for (Thread t : threads) {
            sum += Math.max(0, mx.getThreadCpuTime(t.getId()));
        }
        return sum;
    }

    private static long allocated(com.sun.management.ThreadMXBean mx, List<Thread> threads) {
        long sum = 0;
        for (Thread t : threads) {
            sum += Math.max(0, mx.getThreadAllocatedBytes(t.getId()));
        }
        return sum;
    }
}
