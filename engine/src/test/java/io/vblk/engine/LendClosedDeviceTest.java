package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.testkit.GatedBackend;

/**
 * Regression (review rev11d): a borrower waiting for a lend (the device's queues pausing behind a request in
 * flight) while the device closes: the member leaves its shared thread, so the lend command never
 * runs again. The borrower must give up once the device has ended, not wait for it for ever.
 */
class LendClosedDeviceTest {
    @TempDir
    Path dir;

    @Test
    void aLendWaitingWhenTheDeviceClosesGivesUp() throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        GatedBackend[] gate = new GatedBackend[1];
        try (Image img = Image.open(p, ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("shared-lend-closed", WaitStrategy.BLOCKING, 0)) {
            io.vblk.block.DriverFactory drivers = depth -> {
                gate[0] = new GatedBackend(IoBackends.open(BackendKind.IO_URING, img, depth), true);
                return new RawDriver(gate[0], img.sizeBytes(), false, true);
            };
            DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).image(p).drivers(drivers, 8L << 20)
                    .ioThreads(shared).build();
            try {
                gate[0].set(false); // the read below stays in flight: a lend pauses behind it
                rig.add(0, T_IN, 0, rig.buffer(0, 4096), 4096, true);
                rig.kick(0);
                long deadline = System.nanoTime() + 10_000_000_000L;
                while (gate[0].inFlight() == 0 && System.nanoTime() < deadline) {
                    Thread.sleep(1);
                }
                IoThread member = shared.members()[0];
                AtomicReference<Throwable> outcome = new AtomicReference<>();
                Thread borrower = new Thread(() -> {
                    try {
                        member.lendBackend(1_000_000_000L);
                        outcome.set(new AssertionError("lent a closed device's driver"));
                    } catch (Throwable e) {
                        outcome.set(e);
                    }
                });
                borrower.setDaemon(true);
                borrower.start();
                Thread.sleep(300); // the lend waits for the read (PAUSING)
                assertFalse(rig.device.close(100), "the read in flight never drained");
                borrower.join(15_000);
                assertFalse(borrower.isAlive(), "the borrower still waits for a lend the closed device never gives");
                assertTrue(outcome.get() instanceof java.io.IOException, "outcome: " + outcome.get());
            } finally {
                gate[0].open();
                rig.close();
            }
        }
    }
}
