package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.GatedBackend;

/**
 * rev14b L1: while a shared member's lend is pausing (its queues are not popped until what they
 * have in flight finishes), the sleep re-check still counted the chains waiting in its rings as
 * work and vetoed every sleep: the shared thread spun at full CPU for the whole drain of a slow
 * back end (here a read held by a closed gate). It sleeps now, woken by the completion or the
 * drain's bounded back-off. The CPU bound is behaviour (sleeping against spinning), as in
 * StalledDrainCpuTest, not a speed measurement.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class PausingLendSleepTest {
    /**
     * Far above a sleeping thread's CPU (3 ms measured) and below a spinning one's (245 ms
     * measured before the fix on this loaded 2-vCPU VM: the vetoed sleeps alternate with the
     * drain's re-runs and the scheduler).
     */
    private static final long MAX_CPU_NS = 100_000_000L;
    private static final long WATCH_MS = 2_000;

    @TempDir
    Path dir;

    @Test
    void chainsPostedWhileALendPausesDoNotSpinTheSharedThread() throws Exception {
        GatedBackend[] gate = new GatedBackend[1];
        try (SharedIoThread shared = new SharedIoThread("shared-pausing", WaitStrategy.BLOCKING, 0);
             DeviceRig rig = DeviceRig.builder(dir, BackendKind.NULL).ioThreads(shared)
                     .backends(f -> depth -> gate[0] = new GatedBackend(f.open(depth), false)).build()) {
            long buf = rig.buffer(0, 8192);
            int held = rig.add(0, T_IN, 0, buf, 4096, true);
            rig.kick(0);
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (rig.device.counters(0).get(QueueCounters.REQUESTS) < 1 && System.nanoTime() < until) {
                Thread.sleep(1);
            }
            CompletableFuture<Boolean> lent = new CompletableFuture<>();
            Thread drainer = new Thread(() -> {
                try {
                    lent.complete(rig.device.inactivateDrivers()); // a lend: pauses until the held read completes
                } catch (Throwable e) {
                    lent.completeExceptionally(e);
                }
            }, "lender");
            drainer.setDaemon(true);
            long cpuNs;
            try {
                drainer.start();
                Thread.sleep(200); // the lend pauses the member's queues
                int waiting = rig.add(0, T_IN, 8, buf + 4096, 4096, true);
                rig.kick(0); // a chain the pausing member may not pop
                Thread.sleep(100);
                ThreadMXBean mx = ManagementFactory.getThreadMXBean();
                long tid = shared.thread().getId();
                long before = mx.getThreadCpuTime(tid);
                Thread.sleep(WATCH_MS);
                cpuNs = mx.getThreadCpuTime(tid) - before;
                assertFalse(lent.isDone(), "the lend cannot begin while the read is held");
                assertEquals(1, rig.device.counters(0).get(QueueCounters.REQUESTS), "the second read was not popped while pausing");
                gate[0].open();
                lent.get(30, TimeUnit.SECONDS);
                int first = rig.awaitUsed(0, 10_000);
                int second = rig.awaitUsed(0, 10_000);
                assertEquals(held, first);
                assertEquals(waiting, second, "served once the lend handed the driver back");
            } finally {
                gate[0].open();
            }
            System.out.println("pausing lend: the shared thread used " + cpuNs / 1_000_000 + " ms of CPU in " + WATCH_MS + " ms");
            assertTrue(cpuNs < MAX_CPU_NS, "the shared thread burnt " + cpuNs / 1_000_000 + " ms of CPU in a " + WATCH_MS
                    + " ms pausing lend (a chain it may not pop vetoed every sleep)");
        }
    }
}
