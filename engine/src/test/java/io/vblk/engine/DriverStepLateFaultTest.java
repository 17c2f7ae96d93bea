package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;

/**
 * Review rev15d finding 4: a driver step (resize, activate, inactivate) on a device's own I/O
 * thread caught only IOException and RuntimeException, so a late guest-memory fault (an
 * InternalError the JVM raises at a later safepoint) left the command, which stayed pending and
 * ran the step again from the start: a qcow2 resize is not idempotent (a second L1, leaked
 * clusters), an activate takes its locks twice. The step must run once and its call fail (the
 * caller retries).
 */
class DriverStepLateFaultTest {
    @TempDir
    Path dir;

    @Test
    void aLateFaultInAResizeStepFailsTheCallAndNeverRunsTheStepAgain() throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        AtomicInteger runs = new AtomicInteger();
        try (Image img = Image.open(p, ImageOptions.defaults())) {
            io.vblk.block.DriverFactory drivers = depth -> new RawDriver(IoBackends.open(BackendKind.IO_URING, img, depth),
                    img.sizeBytes(), false, true).resizableBy(size -> {
                        if (runs.incrementAndGet() == 1) {
                            throw new InternalError("a fault occurred in a recent unsafe memory access operation in compiled Java code");
                        }
                    });
            try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).image(p).drivers(drivers, 8L << 20).build()) {
                assertThrows(java.io.IOException.class, () -> rig.device.resizeDrivers(16L << 20),
                        "the step's late fault fails the call");
                assertEquals(1, runs.get(), "the step ran again after the late fault");
            }
        }
    }
}
