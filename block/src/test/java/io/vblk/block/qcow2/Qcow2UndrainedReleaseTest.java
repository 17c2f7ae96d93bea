package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.TestFuse;

/**
 * Review of session 12: a qcow2 driver closed with a request in flight (a backing read the
 * kernel holds: the backing file on a FUSE server that stopped answering, as a hung FUSE or NFS
 * file) was kept in Qcow2Driver's static set for the JVM's life, its L2 tables and buffers with
 * it, and reported undrained for ever, even after the kernel finished the read and aio's reaper
 * released the back end. Now it leaves the set, and reports drained, once the back ends below
 * it are released; not before (the kernel may still write its buffers). Real parts: qemu-img's
 * overlay, a FUSE backing file served from this JVM, io_uring. The waits are hang guards.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class Qcow2UndrainedReleaseTest {
    private static final byte FILL = 0x4d;

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty("vblk.aio.closeDrainMs");
        System.clearProperty("vblk.qcow2.closeDrainMs");
    }

    @Test
    void aDriverClosedWithABackingReadTheKernelHoldsIsForgottenOnceItsBackEndsAreReleased() throws Exception {
        Path at = Files.createDirectory(dir.resolve("mnt"));
        try (TestFuse fs = TestFuse.stalling(at, 1 << 20)) {
            assumeTrue(fs != null, "FUSE cannot be mounted here (no /dev/fuse or no CAP_SYS_ADMIN)");
            fs.fill(FILL);
            Path overlay = DriverRig.create(dir, "overlay.qcow2", "1M", "-F", "raw", "-b", fs.file().toString());
            System.setProperty("vblk.aio.closeDrainMs", "300");
            System.setProperty("vblk.qcow2.closeDrainMs", "300");
            Qcow2Driver driver = Qcow2.open(overlay, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true));
            NativeBuffer buf = DriverRig.buffer(4096);
            int undrainedBefore = Qcow2Driver.undrainedDrivers();
            int backEndsBefore = IoBackends.undrainedBackends();
            AtomicInteger drained = new AtomicInteger();
            try {
                fs.holdReads(true);
                // An unallocated cluster: the read goes to the backing file, and its server holds it.
                DriverRig rig = new DriverRig(driver);
                assertTrue(rig.read(0, buf, 4096) > 0);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                driver.submit();
                while (fs.awaitHeld(1, 5) < 1) {
                    assertTrue(System.nanoTime() < deadline, "the backing read never reached the FUSE server");
                    driver.poll((tag, result) -> fail("completed while held: " + result), 16);
                    if (driver.pendingSubmit() > 0) {
                        driver.submit();
                    }
                }
                Thread closer = new Thread(driver::close, "closer");
                closer.setDaemon(true);
                closer.start();
                closer.join(20_000);
                assertFalse(closer.isAlive(), "the close waits for a read the kernel never finishes");
                assertFalse(driver.closedDrained(), "the backing read is still with the kernel");
                assertEquals(undrainedBefore + 1, Qcow2Driver.undrainedDrivers(), "kept while the kernel holds the read");
                driver.whenDrained(drained::incrementAndGet);
                assertEquals(0, drained.get(), "reported drained while the kernel holds the read");
            } finally {
                fs.answerHeld(); // the kernel completes the read; aio's reaper releases the back end
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (Qcow2Driver.undrainedDrivers() != undrainedBefore || IoBackends.undrainedBackends() != backEndsBefore
                    || drained.get() == 0) {
                assertTrue(System.nanoTime() < deadline, "the driver stayed kept after its back ends were released ("
                        + Qcow2Driver.undrainedDrivers() + " kept, " + IoBackends.undrainedBackends() + " back ends)");
                Thread.sleep(5);
            }
            assertTrue(driver.closedDrained(), "drained once the kernel finished and the back ends were released");
            assertEquals(1, drained.get(), "the driver's drained action ran once");
            java.lang.ref.Reference.reachabilityFence(buf); // the kernel wrote into it until the read completed
        }
    }
}
