package io.vblk.perf.vring;

import java.nio.ByteBuffer;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.hostmem.DirtyLog;
import io.vblk.hostmem.GuestMemory;
import io.vblk.testkit.RingTamperer;
import io.vblk.testkit.SplitQueueDriver;
import io.vblk.vring.DescriptorChain;
import io.vblk.vring.SplitQueue;

/**
 * Device-side cost of one virtio-blk request on a split queue: pop the chain (validate and
 * translate every descriptor), push its used element, and publish used.idx with the interrupt
 * decision, in nanoseconds per request. Single thread, no I/O: this is the ring's own overhead.
 *
 * <p>The driver's side is out of the measurement: the available ring is filled once with the
 * heads of prepared chains (a Linux-shaped 4 KiB read, [header 16 R][data 4096 W][status 1 W],
 * direct or in an indirect table), and each invocation only advances avail.idx by the batch, as a
 * driver publishing a batch does. Used elements are never reaped (the device never reads them).
 *
 * <ul>
 * <li>{@code popPushOne}: one request per publish (a full fence and the notification check per
 * request: the worst case, queue depth 1);
 * <li>{@code popPushBatch32}: 32 requests per publish, as the engine does at end of batch.
 * </ul>
 * With {@code dirtyLog=on} every write of the device is also marked in a dirty log, as during a
 * live migration: the difference to {@code off} is logging's cost per request.
 *
 * <pre>
 * mvn -q -B -o package -pl perf -DskipTests
 * java $(scripts/jvm-flags) -cp perf/target/vblk-perf.jar org.openjdk.jmh.Main 'io.vblk.perf.vring.SplitQueueBenchmark' -f 1 -wi 3 -i 5 -w 1s -r 1s
 * </pre>
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
// No JVM arguments here: a JMH fork inherits the launching JVM's, which scripts/jvm-flags gives.
@Fork(1)
public class SplitQueueBenchmark {
    private static final int SIZE = 256;
    private static final int BATCH = 32;
    private static final int WRITTEN = 4097;

    /** {@code direct}: three descriptors per chain; {@code indirect}: one descriptor and a 3-entry table. */
    @Param({"direct", "indirect"})
    public String layout;

    /** Whether VIRTIO_F_EVENT_IDX is negotiated. */
    @Param({"true", "false"})
    public boolean eventIdx;

    /**
     * {@code on}: dirty logging as during a live migration: the ring marks its used-ring writes
     * and each request marks its data and status pages as the engine's completion path does.
     */
    @Param({"off", "on"})
    public String dirtyLog;

    private DirtyLog log;

    private GuestMemory memory;
    private SplitQueueDriver driver;
    private RingTamperer rings;
    private SplitQueue queue;
    private DescriptorChain chain;
    private int availIdx;

    @Setup(Level.Trial)
    public void setUp() {
        memory = GuestMemory.builder().addMemfd(0, 4 << 20).build();
        driver = SplitQueueDriver.builder(memory).size(SIZE).eventIdx(eventIdx).indirectEntries(4)
                .area(0, 4 << 20).build();
        rings = RingTamperer.of(driver);
        boolean indirect = layout.equals("indirect");
        int chains = indirect ? SIZE : SIZE / 3;
        int[] heads = new int[chains];
        int[] lens = {16, 4096, 1};
        boolean[] writable = {false, true, true};
        for (int i = 0; i < chains; i++) {
            long[] gpas = {driver.allocate(16, 16), driver.allocate(4096, 4096), driver.allocate(1, 1)};
            heads[i] = indirect ? driver.addIndirect(gpas, lens, writable, 3) : driver.addDirect(gpas, lens, writable, 3);
        }
        for (int slot = 0; slot < SIZE; slot++) { // every ring slot names a prepared chain, forever
            rings.writeAvailRing(slot, heads[slot % chains]);
        }
        rings.writeAvailIdx(0);
        queue = new SplitQueue(0, 4);
        int rc = queue.activate(memory, SIZE, driver.descGpa(), driver.availGpa(), driver.usedGpa(), eventIdx, true);
        if (rc != 0) {
            throw new IllegalStateException("activation failed: " + rc);
        }
        chain = queue.newChain();
        availIdx = 0;
        if (dirtyLog.equals("on")) {
            log = new DirtyLog(new UnsafeBuffer(ByteBuffer.allocateDirect((int) DirtyLog.bitmapBytes(4 << 20))));
            queue.logUsedRing(log, driver.usedGpa());
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        memory.close();
    }

    private int popAndPush() {
        if (queue.pop(chain) != 1) {
            throw new IllegalStateException("nothing popped: " + queue);
        }
        DirtyLog l = log;
        if (l != null) {
            // What CompletionPath.logWrites does for a read: its data segments and its status byte.
            int n = chain.segmentCount();
            for (int i = 0; i < n; i++) {
                if (chain.writable(i)) {
                    l.markHost(memory, chain.address(i), chain.length(i));
                }
            }
        }
        queue.addUsed(chain.head(), WRITTEN);
        return chain.segmentCount();
    }

    @Benchmark
    public int popPushOne() {
        availIdx = (availIdx + 1) & 0xffff;
        rings.writeAvailIdx(availIdx);
        int segments = popAndPush();
        return queue.publishUsed() ? segments + 1 : segments;
    }

    @Benchmark
    @OperationsPerInvocation(BATCH)
    public int popPushBatch32() {
        availIdx = (availIdx + BATCH) & 0xffff;
        rings.writeAvailIdx(availIdx);
        int segments = 0;
        for (int i = 0; i < BATCH; i++) {
            segments += popAndPush();
        }
        return queue.publishUsed() ? segments + 1 : segments;
    }
}
