package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;
import io.vblk.testkit.GatedBackend;

/**
 * Regression (review rev11c, hang): BlockDevice.close(drainWaitMs) promises that a back end which
 * never completes what is in flight (a hung FUSE/NFS file, a frozen disk) does not hold its
 * closer for ever. For a qcow2 disk the I/O thread's shutdown closes the block driver on the
 * closer's thread, and Qcow2Driver.close() ran an unbounded drain: close(500) never returned, so
 * export.remove and daemon shutdown hung for as long as the back end did. The drain at close is
 * bounded now (vblk.qcow2.closeDrainMs, 10 s), the driver kept reachable. A GatedBackend with its
 * gate closed stands in for the frozen disk; the raw case is the control.
 */
class Qcow2UndrainedCloseTest {
    @TempDir
    Path dir;

    /** Control: the same frozen disk under a raw driver; close(500) returns (undrained) at once. */
    @Test
    void anUndrainedCloseOfARawDeviceReturnsAfterItsDeadline() throws Exception {
        Path rawImg = dir.resolve("raw.img");
        Files.write(rawImg, new byte[4 << 20]);
        AtomicReference<GatedBackend> gate = new AtomicReference<>();
        DriverFactory gated = depth -> {
            io.vblk.aio.Image image = io.vblk.aio.Image.open(rawImg, io.vblk.aio.ImageOptions.defaults());
            GatedBackend g = new GatedBackend(io.vblk.aio.IoBackends.open(BackendKind.IO_URING, image, depth), true);
            gate.set(g);
            return io.vblk.block.RawDriver.owning(g, image);
        };
        try (FaultPointRig rig = new FaultPointRig(dir, "undrained-raw", 1, gated)) {
            run(rig, gate);
        }
    }

    /**
     * Also when the driver's own wait ({@code vblk.qcow2.closeDrainMs}) is far longer than the
     * hang guard: close(500)'s deadline reaches the driver's drain at close (review of session 12:
     * it took its ms and then the driver's 10 s, and the back end's).
     */
    @Test
    void anUndrainedCloseOfAQcow2DeviceReturnsAfterItsDeadline() throws Exception {
        System.setProperty("vblk.qcow2.closeDrainMs", "600000");
        try {
            undrainedQcow2Close();
        } finally {
            System.clearProperty("vblk.qcow2.closeDrainMs");
        }
    }

    private void undrainedQcow2Close() throws Exception {
        byte[] data = new byte[4 << 20];
        Arrays.fill(data, (byte) 1); // every cluster allocated: a read goes to the file
        Path raw = dir.resolve("data.raw");
        Files.write(raw, data);
        Path img = dir.resolve("disk.qcow2");
        Process p = new ProcessBuilder("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
                "-o", "cluster_size=65536", raw.toString(), img.toString()).inheritIO().start();
        assertEquals(0, p.waitFor());
        DriverFactory qcow2 = Qcow2.factory(img, BackendKind.IO_URING, Qcow2Options.defaults());
        AtomicReference<GatedBackend> gate = new AtomicReference<>();
        DriverFactory gated = depth -> {
            BlockDriver d = qcow2.open(depth);
            try {
                java.lang.reflect.Field f = d.getClass().getDeclaredField("io");
                f.setAccessible(true);
                GatedBackend g = new GatedBackend((IoBackend) f.get(d), true);
                f.set(d, g);
                gate.set(g);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException(e);
            }
            return d;
        };
        try (FaultPointRig rig = new FaultPointRig(dir, "undrained", 1, gated)) {
            run(rig, gate);
        }
    }

    private static void run(FaultPointRig rig, AtomicReference<GatedBackend> gate) throws Exception {
        {
            assertEquals(0, rig.roundTrip(0), "served while the disk answers");
            BlockDriver driver = rig.thread().backend();
            gate.get().set(false); // the disk freezes: completions are withheld
            rig.addRead(0, 1024); // an uncached cluster's L2 table, or its data
            rig.publishAndKick(0);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (rig.queue(0).inflight == 0) {
                assertTrue(System.nanoTime() < deadline, "the read never reached the driver");
                Thread.sleep(1);
            }
            CompletableFuture<Boolean> closed = new CompletableFuture<>();
            Thread closer = new Thread(() -> closed.complete(rig.device.close(500)));
            closer.setDaemon(true);
            closer.start();
            try {
                Boolean drained = closed.get(20, TimeUnit.SECONDS);
                assertFalse(drained, "the read is still in flight");
            } catch (TimeoutException e) {
                StringBuilder where = new StringBuilder();
                for (StackTraceElement s : closer.getStackTrace()) {
                    where.append("\n  at ").append(s);
                }
                fail("BlockDevice.close(500) still waits after 20 s (qcow2 driver " + driver.inFlight()
                        + " in flight):" + where);
            } finally {
                gate.get().open(); // let the hung close finish before the guest memory goes
                closer.join(30_000);
            }
        }
    }
}
