package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.TestFuse;

/**
 * A shared I/O thread whose member drains requests stuck in a stalled back end (a read a FUSE
 * server holds, as a hung FUSE or NFS file would): a lend of the member's driver (an online
 * resize, a migration hand-over: {@code IoThread.lendBackend}) or a queue stop. The drain is a
 * command re-run each round until what is in flight completes, and a member with such a command
 * pending vetoed every sleep, so the shared thread polled at full CPU for as long as the back end
 * stalled (up to the lend's 120 s). It sleeps now, woken by the member's completion (or a bounded
 * back-off), while the other member on the thread keeps being served. The CPU bound is
 * behaviour (sleeping against spinning), as in LendSpinTest, not a speed measurement.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class StalledDrainCpuTest {
    /** A bound far above a sleeping thread's CPU (a few ms) and below a spinning one's (~2 s, 0.6 s or more on this loaded 2-vCPU VM). */
    private static final long MAX_CPU_NS = 200_000_000L;
    private static final long WATCH_MS = 2_000;

    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"lend", "stop"})
    void aDrainStuckInTheKernelCostsTheSharedThreadNoCpu(String drain) throws Exception {
        Path at = Files.createDirectory(dir.resolve("mnt"));
        try (TestFuse fs = TestFuse.stalling(at, 1 << 20)) {
            assumeTrue(fs != null, "FUSE cannot be mounted here (no /dev/fuse or no CAP_SYS_ADMIN)");
            Path other = DeviceRig.createImage(dir, 8L << 20);
            try (SharedIoThread shared = new SharedIoThread("shared-stalled", WaitStrategy.BLOCKING, 0);
                 DeviceRig stalled = DeviceRig.builder(dir, BackendKind.IO_URING).image(fs.file()).readOnly(true)
                         .ioThreads(shared).build();
                 DeviceRig served = DeviceRig.builder(dir, BackendKind.IO_URING).image(other).ioThreads(shared).build()) {
                long warm = stalled.buffer(0, 4096);
                assertEquals(0, stalled.roundTrip(0, T_IN, 0, warm, 4096, true));
                long buffer = served.buffer(0, 4096);
                assertEquals(0, served.roundTrip(0, T_IN, 0, buffer, 4096, true));

                fs.holdReads(true);
                stalled.add(0, T_IN, 8, stalled.buffer(0, 4096), 4096, true);
                stalled.kick(0);
                assertEquals(1, fs.awaitHeld(1, 30_000), "the read reached the FUSE server");
                CompletableFuture<Object> drained = new CompletableFuture<>();
                Thread drainer = new Thread(() -> {
                    try {
                        drained.complete(drain.equals("lend") ? stalled.device.inactivateDrivers() : stalled.device.stopQueue(0));
                    } catch (Throwable e) {
                        drained.completeExceptionally(e);
                    }
                }, "drainer");
                drainer.setDaemon(true);
                long cpuNs;
                try {
                    drainer.start();
                    Thread.sleep(200); // the drain command is pending on the shared thread
                    assertFalse(drained.isDone(), "the drain cannot finish while the read is held");
                    ThreadMXBean mx = ManagementFactory.getThreadMXBean();
                    long tid = shared.thread().getId();
                    long before = mx.getThreadCpuTime(tid);
                    long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WATCH_MS);
                    int servedRequests = 0;
                    while (System.nanoTime() < end) {
                        // The other member is served meanwhile.
                        assertEquals(0, served.roundTrip(0, T_IN, 16, buffer, 4096, true));
                        servedRequests++;
                        Thread.sleep(100);
                    }
                    cpuNs = mx.getThreadCpuTime(tid) - before;
                    assertTrue(servedRequests > 0);
                    assertFalse(drained.isDone(), "the drain cannot finish while the read is held");
                } finally {
                    fs.answerHeld();
                }
                System.out.println(drain + " drain: the shared thread used " + cpuNs / 1_000_000 + " ms of CPU in " + WATCH_MS + " ms");
                Object result = drained.get(30, TimeUnit.SECONDS); // the read completed: the drain ends
                if (drain.equals("lend")) {
                    assertEquals(Boolean.FALSE, result);
                } else {
                    assertTrue(result instanceof io.vblk.vring.QueueState, String.valueOf(result));
                }
                assertTrue(cpuNs < MAX_CPU_NS, "the shared thread burnt " + cpuNs / 1_000_000 + " ms of CPU in a "
                        + WATCH_MS + " ms " + drain + " drain stuck in the kernel (polling instead of sleeping)");
            }
        }
    }
}
