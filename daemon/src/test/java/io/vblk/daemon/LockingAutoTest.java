package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.ImageLock;
import io.vblk.testkit.QemuTools;

/**
 * {@code locking: "auto"} ({@code vblk serve --locking auto}, {@code export.add}) on a file system
 * that has OFD locks: the same locks as {@code on}, taken silently, and QEMU refused the same
 * way. (A file system that refuses OFD locks: {@code LockingAutoFuseTest} where FUSE can be
 * mounted.)
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard, not a timed assertion
class LockingAutoTest {
    @TempDir
    Path dir;

    private ExportFixture x;

    @BeforeEach
    void fixture() {
        x = new ExportFixture(dir);
    }

    @AfterEach
    void close() {
        x.close();
    }

    @Test
    void autoOnAFileSystemWithOfdLocksLocksExactlyAsOn() throws Exception {
        assumeTrue(QemuTools.installed("qemu-io"), "qemu-utils is not installed (.ci/run installs it)");
        Path auto = dir.resolve("auto.img");
        Path on = dir.resolve("on.img");
        Files.write(auto, new byte[1 << 20]);
        Files.write(on, new byte[1 << 20]);
        ExportSpec spec = x.spec("auto", auto, "locking", "auto");
        assertEquals(ImageLock.Locking.AUTO, spec.locking);
        assertEquals("auto", spec.toParams().get("locking"));
        try (Export a = Export.open(spec, x.log, null, x.control);
             Export o = Export.open(x.spec("on", on, "locking", "on"), x.log, null, x.control)) {
            assertEquals(QemuTools.WRITER_BYTES, QemuTools.heldLockBytes(auto), "a writer's locks, as QEMU's");
            assertEquals(QemuTools.heldLockBytes(on), QemuTools.heldLockBytes(auto), "auto takes what on takes");
            QemuTools.Run w = QemuTools.qemuIoWrite(auto);
            assertTrue(w.writeLockRefused(), w.toString());
            assertEquals(0, QemuTools.qemuIo("-r", "-f", "raw", "-c", "read 0 512", auto.toString()).code(), "a reader fits");
            assertEquals("auto", a.spec.locking.cliName());
            assertEquals("on", o.spec.locking.cliName());
        }
        assertEquals(0, QemuTools.heldLockBytes(auto), "released with the export");
        assertEquals(0, QemuTools.qemuIoWrite(auto).code());
        assertFalse(x.said("refuses OFD locks"), "nothing to say: " + x.lines);
    }
}
