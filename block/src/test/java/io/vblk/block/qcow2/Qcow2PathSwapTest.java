package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * Regression (review rev9b, data corruption): the image locks are held on the descriptor opened
 * at open, and FileHost's synchronous metadata steps (read, writeDurably, truncate, storedBytes)
 * once opened the file again BY PATH. When the path names another file by then (renamed and
 * replaced), vblk wrote into a file it never locked, one QEMU holds the write lock on. Now every
 * step goes through the locked descriptor's inode: the resize lands in the renamed image.
 */
class Qcow2PathSwapTest {
    @TempDir
    Path dir;

    @Test
    void aResizeAfterThePathWasReplacedGoesIntoTheLockedImageNotTheNewFile() throws Exception {
        Path img = DriverRig.create(dir, "vm.qcow2", "64M");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer a = DriverRig.buffer(65536);
            DriverRig.fill(a, new byte[65536], 0, 65536);
            assertEquals(65536, rig.one(rig.write(0, a, 65536))); // started
            // The admin renames the image and puts another VM's image at the path; QEMU writes it.
            Files.move(img, dir.resolve("vm.old.qcow2"));
            assertEquals(0, DriverRig.run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "32M").code());
            Process qemu = new ProcessBuilder("qemu-io", "-f", "qcow2", "-c", "sleep 60000", img.toString())
                    .redirectErrorStream(true).start();
            try {
                // Wait for qemu-io's writer locks by reading the lock bytes (a CI run once saw 10 s
                // of polling with qemu-img info pass on a loaded 2-core machine); a qemu-io that
                // died instead shows its output.
                try {
                    QemuTools.awaitLockBytes(img, m -> (m & QemuTools.WRITER_BYTES) == QemuTools.WRITER_BYTES, 60);
                } catch (AssertionError e) {
                    String out = qemu.isAlive() ? "still running" : new String(qemu.getInputStream().readAllBytes());
                    throw new AssertionError(e.getMessage() + "; qemu-io: " + out, e);
                }
                assertNotEquals(0, DriverRig.run("qemu-img", "info", img.toString()).code(), "QEMU holds the new file's locks");
                byte[] before = Files.readAllBytes(img);
                try {
                    d.resize(128L << 20);
                } catch (Exception e) {
                    // whatever it says: what matters is what it wrote
                }
                assertArrayEquals(before, Files.readAllBytes(img), "vblk wrote into the file QEMU holds locked");
                assertEquals(128L << 20, d.sizeBytes(), "the resize went through");
            } finally {
                qemu.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            }
        }
        // The renamed image (vblk's own, closed now) holds the new size and the data.
        assertEquals(128L << 20, Qcow2.virtualSize(dir.resolve("vm.old.qcow2")));
        assertEquals(0, DriverRig.run("qemu-img", "check", "-q", dir.resolve("vm.old.qcow2").toString()).code());
    }
}
