package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.ImageLock;
import io.vblk.testkit.QemuTools;
import io.vblk.vhost.Log;

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

    private final List<String> lines = new CopyOnWriteArrayList<>();
    private ControlThreads control;

    @BeforeEach
    void threads() {
        control = new ControlThreads(Log.to(lines::add));
    }

    @AfterEach
    void close() {
        control.close();
    }

    /** The spec {@code vblk serve --image IMG --socket S --locking MODE} and {@code export.add} make. */
    private ExportSpec spec(Path image, String locking) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("image", image.toString());
        m.put("socket", dir.resolve(locking + ".sock").toString());
        m.put("locking", locking);
        return ExportSpec.parse(Params.commandLine(m), locking);
    }

    @Test
    void autoOnAFileSystemWithOfdLocksLocksExactlyAsOn() throws Exception {
        assumeTrue(QemuTools.installed("qemu-io"), "qemu-utils is not installed (.ci/run installs it)");
        Path auto = dir.resolve("auto.img");
        Path on = dir.resolve("on.img");
        Files.write(auto, new byte[1 << 20]);
        Files.write(on, new byte[1 << 20]);
        ExportSpec spec = spec(auto, "auto");
        assertEquals(ImageLock.Locking.AUTO, spec.locking);
        assertEquals("auto", spec.toParams().get("locking"));
        try (Export a = Export.open(spec, Log.to(lines::add), null, control);
             Export o = Export.open(spec(on, "on"), Log.to(lines::add), null, control)) {
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
        assertFalse(lines.stream().anyMatch(l -> l.contains("refuses OFD locks")), "nothing to say: " + lines);
    }
}
