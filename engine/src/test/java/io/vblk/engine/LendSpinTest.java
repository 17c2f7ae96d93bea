package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertFalse;
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
 * Regressions (reviews rev11d, rev11e): while the driver is lent, EpollWait leaves its
 * completion eventfd unacknowledged; the eventfd is level-triggered in the member's epoll,
 * nested in the shared thread's, so a completion signal pending when the lend starts (or raised
 * meanwhile) made the shared thread spin for the whole lend instead of sleeping. The member's
 * completion sources now leave the epoll set while lent; and a late guest-memory fault inside
 * that change (simulated once, as FaultSeamTest does) no longer leaves them in: the flag once
 * changed before the loop, so the lend's second run removed nothing.
 */
class LendSpinTest {
    /** A bound far above a sleeping thread's CPU and far below a spinning one's (~2 s). */
    private static final long MAX_CPU_NS = 500_000_000L;

    @TempDir
    Path dir;

    @Test
    void aLentDriverDoesNotMakeTheSharedThreadSpin() throws Exception {
        long cpuNs = cpuOfTheSharedThreadDuringALend(false);
        assertTrue(cpuNs < MAX_CPU_NS, "the shared thread burnt " + cpuNs / 1_000_000
                + " ms of CPU in a 2 s lend (spinning on the unacknowledged completion eventfd)");
    }

    @Test
    void aFaultInsideTheLendsEpollChangeDoesNotLeaveTheSharedThreadSpinning() throws Exception {
        long cpuNs = cpuOfTheSharedThreadDuringALend(true);
        assertTrue(cpuNs < MAX_CPU_NS, "the shared thread burnt " + cpuNs / 1_000_000
                + " ms of CPU in a 2 s lend (completion eventfd left in the set after a fault in backendLent)");
    }

    /**
     * Lends a shared member's driver for 2 s (a resize), with a completion signal raised while
     * lent, and returns the CPU the shared thread used meanwhile; with {@code faultOnce}, the
     * first look at the completion source inside EpollWait.backendLent throws a late fault.
     */
    private long cpuOfTheSharedThreadDuringALend(boolean faultOnce) throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        EventFd[] completion = new EventFd[1];
        AtomicLong cpuNs = new AtomicLong();
        AtomicBoolean armed = new AtomicBoolean();
        long[] tid = new long[1];
        try (Image img = Image.open(p, ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("shared-spin", WaitStrategy.BLOCKING, 0)) {
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
                armed.set(faultOnce);
                rig.device.resizeDrivers(8L << 20);
                assertFalse(armed.get(), "the simulated fault was not thrown inside backendLent");
            }
        }
        return cpuNs.get();
    }
}
