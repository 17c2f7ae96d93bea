package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.testkit.GatedBackend;

/**
 * Regression (review rev11d): two driver steps (resizeDrivers, activate/inactivate) on one shared-thread device at
 * once. Both lend commands wait in the pending commands while a request is in flight; once it
 * completes, one removeIf pass runs both and lends the driver to both callers together.
 */
class LendConcurrentTest {
    @TempDir
    Path dir;

    @Test
    void twoLendsNeverHoldTheDriverTogether() throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        GatedBackend[] gate = new GatedBackend[1];
        AtomicInteger inside = new AtomicInteger();
        AtomicInteger most = new AtomicInteger();
        try (Image img = Image.open(p, ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("shared-lend", WaitStrategy.BLOCKING, 0)) {
            io.vblk.block.DriverFactory drivers = depth -> {
                gate[0] = new GatedBackend(IoBackends.open(BackendKind.IO_URING, img, depth), true);
                return new RawDriver(gate[0], img.sizeBytes(), false, true).resizableBy(size -> {
                    int n = inside.incrementAndGet();
                    most.accumulateAndGet(n, Math::max);
                    try {
                        Thread.sleep(500);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    inside.decrementAndGet();
                });
            };
            try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).image(p).drivers(drivers, 8L << 20)
                    .ioThreads(shared).build()) {
                gate[0].set(false); // the read below stays in flight
                long buf = rig.buffer(0, 4096);
                rig.add(0, T_IN, 0, buf, 4096, true);
                rig.kick(0);
                long deadline = System.nanoTime() + 10_000_000_000L;
                while (gate[0].inFlight() == 0 && System.nanoTime() < deadline) {
                    Thread.sleep(1);
                }
                Thread a = new Thread(() -> resize(rig.device));
                Thread b = new Thread(() -> resize(rig.device));
                a.start();
                b.start();
                Thread.sleep(500); // both lend commands now wait for the read (PAUSING)
                gate[0].open();
                a.join(30_000);
                b.join(30_000);
                rig.awaitUsed(0, 10_000);
                assertEquals(1, most.get(), "the driver was lent to two threads at once");
            }
        }
    }

    private static void resize(BlockDevice d) {
        try {
            d.resizeDrivers(8L << 20);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
