package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.sys.EventFd;

/**
 * Regression (review rev11d): while the driver is lent, EpollWait leaves its completion eventfd unacknowledged; the
 * eventfd is level-triggered in the member's epoll, nested in the shared thread's, so a
 * completion signal pending when the lend starts (or raised meanwhile) makes the shared thread
 * spin for the whole lend instead of sleeping.
 */
class LendSpinTest {
    @TempDir
    Path dir;

    @Test
    void aLentDriverDoesNotMakeTheSharedThreadSpin() throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        EventFd[] completion = new EventFd[1];
        AtomicLong cpuNs = new AtomicLong();
        long[] tid = new long[1];
        try (Image img = Image.open(p, ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("shared-spin", WaitStrategy.BLOCKING, 0)) {
            io.vblk.block.DriverFactory drivers = depth -> {
                var real = IoBackends.open(BackendKind.IO_URING, img, depth);
                completion[0] = real.completionEvent();
                return new RawDriver(real, img.sizeBytes(), false, true).resizableBy(size -> {
                    // A completion signal arrives while lent (any late CQE, or one left unread).
                    completion[0].signal();
                    var mx = ManagementFactory.getThreadMXBean();
                    long before = mx.getThreadCpuTime(tid[0]);
                    try {
                        Thread.sleep(2_000);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    cpuNs.set(mx.getThreadCpuTime(tid[0]) - before);
                });
            };
            try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).image(p).drivers(drivers, 8L << 20)
                    .ioThreads(shared).build()) {
                rig.roundTrip(0, T_IN, 0, rig.buffer(0, 4096), 4096, true);
                tid[0] = shared.thread().getId();
                rig.device.resizeDrivers(8L << 20);
                assertTrue(cpuNs.get() < 500_000_000L, "the shared thread burnt " + cpuNs.get() / 1_000_000
                        + " ms of CPU in a 2 s lend (spinning on the unacknowledged completion eventfd)");
            }
        }
    }
}
