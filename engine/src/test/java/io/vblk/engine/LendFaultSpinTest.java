package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.sys.EventFd;
import io.vblk.testkit.ForwardingBackend;

/**
 * Regression (review rev11e): EpollWait.backendLent(true) set its flag before it removes the completion sources. A
 * failure inside the removal (the late guest-memory fault GuestFaults says can land at any
 * safepoint poll; simulated once, as FaultSeamTest does) re-queues the lend command, whose
 * second run finds the flag already true and returns without removing anything: the lend then
 * runs with the completion eventfd still in the member's epoll set, unacknowledged
 * (acknowledge skips it while lent), and the shared thread spins for the whole lend: the very
 * thing LendSpinTest guards against (review rev11d).
 */
class LendFaultSpinTest {
    @TempDir
    Path dir;

    @Test
    void aFaultInsideTheLendsEpollChangeDoesNotLeaveTheSharedThreadSpinning() throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        EventFd[] completion = new EventFd[1];
        AtomicLong cpuNs = new AtomicLong();
        AtomicBoolean armed = new AtomicBoolean();
        long[] tid = new long[1];
        try (Image img = Image.open(p, ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("shared-fault-spin", WaitStrategy.BLOCKING, 0)) {
            io.vblk.block.DriverFactory drivers = depth -> {
                IoBackend real = IoBackends.open(BackendKind.IO_URING, img, depth);
                completion[0] = real.completionEvent();
                IoBackend faulty = new ForwardingBackend(real) {
                    @Override
                    public EventFd completionEvent() {
                        boolean inLend = StackWalker.getInstance().walk(s -> s.anyMatch(f -> f.getMethodName().equals("backendLent")));
                        if (inLend && armed.compareAndSet(true, false)) {
                            throw new InternalError("a fault occurred in an unsafe memory access operation (simulated, late)");
                        }
                        return super.completionEvent();
                    }
                };
                return new RawDriver(faulty, img.sizeBytes(), false, true).resizableBy(size -> {
                    completion[0].signal(); // a completion signal while lent, as in LendSpinTest
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
                armed.set(true);
                rig.device.resizeDrivers(8L << 20);
                assertTrue(!armed.get(), "the simulated fault was not thrown inside backendLent");
                assertTrue(cpuNs.get() < 500_000_000L, "the shared thread burnt " + cpuNs.get() / 1_000_000
                        + " ms of CPU in a 2 s lend (completion eventfd left in the set after a fault in backendLent)");
            }
        }
    }
}
