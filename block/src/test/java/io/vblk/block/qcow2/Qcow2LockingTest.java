package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.ImageLock;
import io.vblk.testkit.QemuTools;

/**
 * QEMU's image locks on a qcow2 image and its backing chain, with real qemu-img and qemu-io: the
 * overlay is a writer's use, every backing file a reader's; a refused image is neither read into
 * a cache nor written (not even rounded to whole clusters).
 */
class Qcow2LockingTest {
    @TempDir
    Path dir;

    @Test
    void qemuIsRefusedTheOverlayAndMayOnlyReadTheBase() throws Exception {
        Path base = dir.resolve("base.raw");
        Files.write(base, new byte[4 << 20]);
        Path over = DriverRig.create(dir, "over.qcow2", String.valueOf(4 << 20), "-b", base.toString(), "-F", "raw");
        try (Qcow2Driver d = Qcow2.open(over, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            assertEquals(2, d.files().size());
            QemuTools.Run info = DriverRig.run("qemu-img", "info", over.toString());
            assertNotEquals(0, info.code(), info.output());
            assertTrue(info.output().contains("Failed to get shared \"write\" lock"), info.output());
            assertEquals(0, DriverRig.run("qemu-img", "info", "-U", over.toString()).code(), "force-share reads it");
            // The base: readable beside the overlay, never writable.
            assertEquals(0, DriverRig.run("qemu-img", "info", "-f", "raw", base.toString()).code());
            QemuTools.Run w = DriverRig.run("qemu-io", "-f", "raw", "-c", "write 0 512", base.toString());
            assertTrue(w.output().contains("Failed to get \"write\" lock"), w.output());
        }
        // Released with the driver (and its io_uring ring).
        assertEquals(0, DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write 0 512", over.toString()).code());
    }

    @Test
    void anImageQemuHoldsIsRefusedBeforeAnythingIsReadOrWritten() throws Exception {
        Path img = DriverRig.create(dir, "held.qcow2", String.valueOf(4 << 20));
        long size = Files.size(img);
        assertNotEquals(0, size % 65536, "qemu-img leaves the file inside a cluster (vblk would round it)");
        byte[] before = Files.readAllBytes(img);
        Process qemu = new ProcessBuilder("qemu-io", "-f", "qcow2", "-c", "sleep 60000", img.toString())
                .redirectErrorStream(true).start();
        try {
            awaitHeld(img);
            ImageLock.LockedException e = assertThrows(ImageLock.LockedException.class,
                    () -> Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults()).close());
            assertTrue(e.getMessage().contains("lock on " + img) && e.holder().startsWith("qemu-io (pid " + qemu.pid() + ")"),
                    e.getMessage());
            assertThrows(ImageLock.LockedException.class,
                    () -> Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true)).close());
        } finally {
            qemu.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        assertEquals(size, Files.size(img));
        assertTrue(java.util.Arrays.equals(before, Files.readAllBytes(img)), "not a byte written");
        Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults()).close(); // free once qemu-io died
    }

    private static void awaitHeld(Path img) {
        // byte 101: "write" in use, what qemu-img info is refused for. Up to 60 s for qemu-io to
        // start and open the image (a hang guard: 10 s ran out for Qcow2PathSwapTest on a loaded CI run).
        QemuTools.awaitLockBytes(img, m -> (m & 0x02) != 0, 60);
    }
}
