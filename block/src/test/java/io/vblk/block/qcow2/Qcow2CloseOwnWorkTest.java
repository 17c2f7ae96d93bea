package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * Review rev13b: a device's close(ms) passes the qcow2 driver only what is left of its deadline,
 * ~0 once the guest queues used it up; the driver's own work still in flight then (a cluster
 * refill's refcount writes and flushes, started by a prefetch after the guest's write completed)
 * got no time at all: the close reported undrained (locks kept, the device not quiesced) and never
 * returned its reserved clusters, leaked in the image. Now the driver's own work gets a floor
 * ({@link Qcow2Driver#OWN_WORK_FLOOR_NS}): closeWithin(0) with a refill in flight closes drained
 * and qemu-img check finds no leak. Real parts: qemu-img's image and check, io_uring.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class Qcow2CloseOwnWorkTest {
    private static final int CLUSTER = 64 << 10;

    @TempDir
    Path dir;

    @Test
    void closeWithNoTimeLeftStillFinishesTheRefillAndReturnsReservedClusters() throws Exception {
        Path image = DriverRig.create(dir, "a.qcow2", "4G");
        Qcow2Driver driver = Qcow2.open(image, BackendKind.IO_URING, 8, Qcow2Options.defaults());
        int undrainedBefore = Qcow2Driver.undrainedDrivers();
        NativeBuffer buf = DriverRig.buffer(4096);
        DriverRig rig = new DriverRig(driver);
        boolean ownWorkInFlight = false;
        // Allocating writes, one at a time, until the refill's prefetch is still running when
        // the guest's write has completed.
        for (int i = 0; i < 20_000 && !ownWorkInFlight; i++) {
            assertEquals(4096, rig.one(rig.write((long) i * CLUSTER, buf, 4096)), "write " + i);
            ownWorkInFlight = driver.inFlight() == 0 && driver.backEndBusy() > 0;
        }
        assumeTrue(ownWorkInFlight, "no refill still in flight after a write here");
        driver.closeWithin(0);
        assertTrue(driver.closedDrained(), "closeWithin(0) with only the driver's own work in flight closed undrained");
        assertEquals(undrainedBefore, Qcow2Driver.undrainedDrivers());
        QemuTools.Run check = DriverRig.run("qemu-img", "check", image.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
    }
}
