package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.QemuTools;

/**
 * irob: the daemon's exports take QEMU's image locks, with real qemu-img, qemu-io and
 * qemu-storage-daemon: QEMU is refused what a vblk export writes and may read what it only
 * reads; an image qemu-storage-daemon exports writable is refused with the holder named; the
 * locks go with {@code export.remove}; {@code locking=off} takes none.
 */
class ImageLockingExportTest {
    /** An image locked by another process: in use (-32002), not a bad parameter. */
    private static final int IN_USE = -32002;

    @TempDir
    Path dir;

    private static String spec(String id, Path image, Path socket, Map<String, Object> extra) {
        return DaemonRig.exportSpec(id, image, socket, extra);
    }

    private static QemuTools.Run run(String... cmd) {
        assumeTrue(QemuTools.installed("qemu-img"), "qemu-utils is not installed (.ci/run installs it)");
        return QemuTools.run(cmd);
    }

    @Test
    void aWritableExportLocksQemuOutUntilItIsRemoved() throws Exception {
        Path img = DaemonRig.image(dir, "w.img");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("w", img, dir.resolve("w.sock"), Map.of()));
            QemuTools.Run rw = run("qemu-io", "-f", "raw", "-c", "write 0 512", img.toString());
            assertNotEquals(0, rw.code(), rw.output());
            assertTrue(rw.output().contains("Failed to get \"write\" lock"), rw.output());
            assertEquals(0, run("qemu-img", "info", "-U", img.toString()).code());
            d.result("export.remove", DaemonRig.json(Map.of("id", "w")));
            QemuTools.Run after = run("qemu-io", "-f", "raw", "-c", "write 0 512", img.toString());
            assertEquals(0, after.code(), "released with the export: " + after.output());
        }
    }

    @Test
    void aQcow2ExportRefusesQemuImgInfoAndAReadOnlyExportAllowsIt() throws Exception {
        Path q = dir.resolve("q.qcow2");
        assertEquals(0, run("qemu-img", "create", "-q", "-f", "qcow2", q.toString(), "4M").code());
        Path r = DaemonRig.image(dir, "r.img");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("q", q, dir.resolve("q.sock"), Map.of("format", "qcow2")));
            QemuTools.Run info = run("qemu-img", "info", q.toString());
            assertNotEquals(0, info.code(), info.output());
            assertTrue(info.output().contains("Failed to get shared \"write\" lock"), info.output());
            assertEquals(0, run("qemu-img", "info", "-U", q.toString()).code());

            d.result("export.add", spec("r", r, dir.resolve("r.sock"), Map.of("read_only", true)));
            QemuTools.Run roInfo = run("qemu-img", "info", "-f", "raw", r.toString());
            assertEquals(0, roInfo.code(), roInfo.output());
            assertEquals(0, run("qemu-io", "-r", "-f", "raw", "-c", "read 0 512", r.toString()).code());
            QemuTools.Run rw = run("qemu-io", "-f", "raw", "-c", "write 0 512", r.toString());
            assertTrue(rw.output().contains("Failed to get \"write\" lock"), rw.output());
        }
    }

    @Test
    void anImageQemuStorageDaemonExportsWritableIsRefusedNamingIt() throws Exception {
        assumeTrue(QemuTools.installed("qemu-storage-daemon"), "qemu-storage-daemon is not installed");
        Path img = DaemonRig.image(dir, "qsd.img");
        Path qsdSock = dir.resolve("qsd.sock");
        Process qsd = QemuTools.storageDaemon(img, qsdSock, dir.resolve("qsd.log"));
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            DaemonRig.awaitListening(qsdSock, "qemu-storage-daemon");
            Map<String, Object> e = DaemonRig.error(d.call("export.add", spec("v", img, dir.resolve("v.sock"), Map.of())));
            assertEquals(IN_USE, ((Number) e.get("code")).intValue(), e.toString());
            String message = String.valueOf(e.get("message"));
            assertTrue(message.contains("Failed to get shared \"write\" lock"), message);
            assertTrue(message.contains("qemu-storage-daemon (pid " + qsd.pid() + ")"), message);
            assertTrue(!Files.exists(dir.resolve("v.sock")), "nothing served");
            // locking=off is the deliberate override (a migration's destination).
            d.result("export.add", spec("v", img, dir.resolve("v.sock"), Map.of("locking", "off")));
            Map<String, Object> bad = DaemonRig.error(d.call("export.add", spec("x", DaemonRig.image(dir, "x.img"),
                    dir.resolve("x.sock"), Map.of("locking", "sometimes"))));
            assertTrue(String.valueOf(bad.get("message")).contains("locking"), bad.toString());
        } finally {
            qsd.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
    }
}
