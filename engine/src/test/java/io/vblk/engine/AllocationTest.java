package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import io.vblk.aio.BackendKind;

/**
 * No allocation per request in steady state: after warm-up, a million requests may allocate at
 * most a few kilobytes in total on the device's data-plane threads (ThreadMXBean counts every
 * TLAB and outside-TLAB allocation of a thread).
 */
class AllocationTest {
    private static final int WARM_UP = 200_000;
    private static final int MEASURED = 1_000_000;
    private static final int DEPTH = 128;
    private static final long BOUND_BYTES = 64 * 1024;

    @TempDir
    Path dir;

    @ParameterizedTest
    @CsvSource({"NULL,SHARED", "NULL,DEDICATED", "IO_URING,SHARED", "LINUX_AIO,SHARED"})
    void millionRequestsAllocateNothingOnDataPlaneThreads(BackendKind kind, ThreadingMode mode) throws Exception {
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.ADAPTIVE).threadingMode(mode).build();
        int total = kind == BackendKind.NULL ? MEASURED : MEASURED / 10;
        // This rig's threads only: an earlier test's rig thread of the same name may still be
        // running or ending (a bounded close leaves one stuck in the kernel), its bytes not ours.
        java.util.Set<Thread> earlier = java.util.Set.copyOf(Thread.getAllStackTraces().keySet());
        try (DeviceRig rig = DeviceRig.builder(dir, kind).tuning(tuning).config(b -> b.queueSize(512)).build()) {
            long buf = rig.buffer(0, 4096L * DEPTH);
            if (kind == BackendKind.IO_URING) {
                // The fixed-buffer path (READ_FIXED/WRITE_FIXED, a lookup per transfer) is measured too.
                assertTrue(rig.device.fixedBuffers().contains(": registered "), rig.device.fixedBuffers());
            }
            run(rig, buf, WARM_UP / (kind == BackendKind.NULL ? 1 : 10));
            com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
            List<Thread> plane = dataPlaneThreads("rig-" + kind.cliName(), earlier);
            assertTrue(!plane.isEmpty(), "found the data-plane threads");
            long before = allocated(mx, plane);
            run(rig, buf, total);
            long after = allocated(mx, plane);
            long bytes = after - before;
            assertTrue(bytes <= BOUND_BYTES, String.format("%d bytes allocated on %s over %d requests (%.4f bytes/request)",
                    bytes, plane, total, bytes / (double) total));
        }
    }

    private static void run(DeviceRig rig, long buf, int requests) {
        int done = 0;
        int issued = 0;
        while (done < requests) {
            while (issued - done < DEPTH && issued < requests) {
                int slot = issued % DEPTH;
                rig.add(0, (issued & 1) == 0 ? T_IN : T_OUT, slot * 8L, buf + slot * 4096L, 4096, (issued & 1) == 0);
                issued++;
            }
            rig.kick(0);
            rig.awaitUsed(0, 10_000);
            done++;
            while (rig.driver(0).reap() >= 0) {
                done++;
            }
        }
    }

    private static List<Thread> dataPlaneThreads(String prefix, java.util.Set<Thread> earlier) {
        List<Thread> found = new ArrayList<>();
        for (Thread t : Thread.getAllStackTraces().keySet()) {
            if (t.getName().startsWith(prefix) && !earlier.contains(t)) {
                found.add(t);
            }
        }
        return found;
    }

    private static long allocated(com.sun.management.ThreadMXBean mx, List<Thread> threads) {
        long sum = 0;
        for (Thread t : threads) {
            sum += mx.getThreadAllocatedBytes(t.getId());
        }
        return sum;
    }
}
