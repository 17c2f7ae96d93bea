package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.testkit.ForwardingBackend;

/**
 * Regression (review rev11d): a bounded device close (VhostUserServer.close's close(deviceDrainWaitMs), e.g. an
 * export.remove during a hand-over's inactivate on a slow disk) while the shared thread's driver
 * is lent: the stop commands wait behind the lend, the deadline passes, shutdown closes the
 * member's resources - the driver and its back end - under the borrower still using it.
 */
class LendCloseTest {
    @TempDir
    Path dir;

    @Test
    void aBoundedCloseNeverClosesALentDriver() throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        AtomicBoolean backendClosed = new AtomicBoolean();
        AtomicBoolean closedUnderStep = new AtomicBoolean();
        AtomicBoolean inStep = new AtomicBoolean();
        try (Image img = Image.open(p, ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("shared-lend-close", WaitStrategy.BLOCKING, 0)) {
            io.vblk.block.DriverFactory drivers = depth -> {
                IoBackend real = IoBackends.open(BackendKind.IO_URING, img, depth);
                IoBackend watched = new ForwardingBackend(real) {
                    @Override
                    public void close() {
                        backendClosed.set(true);
                        super.close();
                    }
                };
                return new RawDriver(watched, img.sizeBytes(), false, true).resizableBy(size -> {
                    inStep.set(true);
                    try {
                        Thread.sleep(2_000); // a durable metadata write to a slow disk
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    closedUnderStep.set(backendClosed.get());
                });
            };
            DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).image(p).drivers(drivers, 8L << 20)
                    .ioThreads(shared).build();
            Thread resizer = new Thread(() -> {
                try {
                    rig.device.resizeDrivers(8L << 20);
                } catch (Exception e) {
                    // the outcome is not the point
                }
            });
            resizer.start();
            while (!inStep.get()) {
                Thread.sleep(1);
            }
            assertFalse(rig.device.close(100), "the queues' stops waited behind the lend"); // as VhostUserServer.close does
            assertFalse(rig.device.quiesced(), "quiesced while the borrower still holds the driver");
            resizer.join(30_000);
            assertTrue(rig.device.quiesced(), "the borrower's return closed the driver, drained");
            rig.close();
            assertFalse(closedUnderStep.get(), "the lent driver's back end was closed while the borrower used it");
        }
    }
}
