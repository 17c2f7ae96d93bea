package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.testkit.GatedBackend;

/**
 * Regression (review rev11d): a borrower interrupted just as its lend completes (the request it waited for
 * finishes, the shared thread lends the driver, the interrupt lands before the borrower runs
 * again) gives up, yet the lend happened: the driver must be handed back, not left lent for ever
 * (the device's queues would never be popped again). Many tries, since each is a race.
 */
class LendInterruptTest {
    @TempDir
    Path dir;

    @Test
    void anInterruptedBorrowerNeverLeavesTheDriverLent() throws Exception {
        Path p = DeviceRig.createImage(dir, 8L << 20);
        GatedBackend[] gate = new GatedBackend[1];
        try (Image img = Image.open(p, ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("shared-lend-interrupt", WaitStrategy.BLOCKING, 0)) {
            io.vblk.block.DriverFactory drivers = depth -> {
                gate[0] = new GatedBackend(IoBackends.open(BackendKind.IO_URING, img, depth), true);
                return new RawDriver(gate[0], img.sizeBytes(), false, true);
            };
            try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).image(p).drivers(drivers, 8L << 20)
                    .ioThreads(shared).build()) {
                IoThread member = shared.members()[0];
                long buf = rig.buffer(0, 4096);
                for (int i = 0; i < 200; i++) {
                    gate[0].set(false); // the read stays unreaped: the lend pauses behind it
                    rig.add(0, T_IN, 0, buf, 4096, true);
                    rig.kick(0);
                    long deadline = System.nanoTime() + 10_000_000_000L;
                    while (gate[0].inFlight() == 0 && System.nanoTime() < deadline) {
                        Thread.sleep(1);
                    }
                    Thread borrower = new Thread(() -> {
                        try {
                            member.lendBackend(10_000_000_000L);
                            member.returnBackend(); // the interrupt came too late: a plain lend
                        } catch (java.io.IOException e) {
                            // interrupted: expected
                        }
                    });
                    borrower.start();
                    while (member.lendState() != BackendLend.State.PAUSING && System.nanoTime() < deadline) {
                        Thread.onSpinWait();
                    }
                    Thread.sleep(5); // the borrower parks in its wait
                    gate[0].open(); // the read completes: the lend follows within microseconds
                    long spin = System.nanoTime() + (i % 16) * 5_000L;
                    while (System.nanoTime() < spin) {
                        Thread.onSpinWait();
                    }
                    borrower.interrupt();
                    borrower.join(10_000);
                    assertFalse(borrower.isAlive());
                    rig.awaitUsed(0, 10_000);
                    long until = System.nanoTime() + 30_000_000_000L; // a hang guard: a lend left behind never ends
                    while (member.lendState() != BackendLend.State.SERVING && System.nanoTime() < until) {
                        Thread.sleep(1);
                    }
                    BackendLend.State state = member.lendState();
                    if (state == BackendLend.State.LENT) {
                        member.returnBackend(); // so that the rig can close: the assertion below fails anyway
                    }
                    assertEquals(BackendLend.State.SERVING, state, "try " + i + ": the driver stayed lent");
                }
            }
        }
    }
}
