package io.vblk.perf.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;

import io.vblk.aio.BackendKind;
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.WaitStrategy;
import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.load.RunObserver;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;

/**
 * The embedded contender reports the guest thread's CPU per I/O next to the device's: the
 * second thread on the machine's cores that fio, driving the disk from one thread, does not have.
 */
class EmbeddedContenderTest {
    @Test
    void reportsTheGuestThreadsCpuNextToTheDevicesCpu() {
        EmbeddedContender c = new EmbeddedContender(DiskSpec.nullDevice(1L << 24), BackendKind.NULL, WaitStrategy.ADAPTIVE,
                ThreadingMode.SHARED, 1);
        BenchResult r = c.run("t", Workload.randomReads(32, 0, TimeUnit.MILLISECONDS.toNanos(200)), RunObserver.NONE);
        assertTrue(r.requests() > 0, "completed nothing");
        assertEquals(0, r.errors());
        Double guest = r.perIo().get("guest_cpu_us_per_io");
        assertTrue(guest != null && guest > 0 && Double.isFinite(guest), "guest CPU per I/O: " + r.perIo());
        assertTrue(r.cpuUsPerIo() > 0, "device CPU per I/O: " + r.cpuUsPerIo());
    }

    /**
     * Where the requests were, sampled through the run: every one of the depth is somewhere
     * (with the guest, in the avail ring, with the device, finished and unpublished, in the used
     * ring), so the averages add up to the depth; the rings are those of a real device on a file.
     */
    @Test
    void samplesWhereTheRequestsAreAndTheyAddUpToTheDepth(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws java.io.IOException {
        java.nio.file.Path image = dir.resolve("img");
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(16L << 20);
        }
        int depth = 16;
        EmbeddedContender c = new EmbeddedContender(DiskSpec.file(image), BackendKind.IO_URING, WaitStrategy.ADAPTIVE,
                ThreadingMode.SHARED, 1);
        BenchResult r = c.run("t", Workload.randomReads(depth, 0, TimeUnit.MILLISECONDS.toNanos(300)), RunObserver.NONE);
        assertTrue(r.requests() > 0, "completed nothing");
        java.util.Map<String, Double> p = r.perIo();
        assertTrue(p.get("occ_samples") > 0, "no samples: " + p);
        double sum = p.get("occ_guest") + p.get("occ_avail") + p.get("occ_device") + p.get("occ_unpublished") + p.get("occ_used");
        assertEquals(depth, sum, 1.0, "the places add up to the depth: " + p);
        assertTrue(p.get("occ_device") > 0, "nothing ever with the device: " + p);
    }
}

