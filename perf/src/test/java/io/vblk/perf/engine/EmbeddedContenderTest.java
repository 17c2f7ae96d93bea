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
}
