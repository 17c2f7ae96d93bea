package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;
import io.vblk.testkit.QemuTools;

/**
 * {@code export.add} with {@code incoming: true}, the destination of a live migration, with
 * image locking on: one daemon serves the source's and the destination's export of one image at
 * once and hands the image over when the source's frontend stops with dirty logging on and the
 * destination's starts (real OFD locks; qemu-io as the third writer that stays refused); an
 * incoming export beside a writer qemu-storage-daemon opens, and its device's start is refused
 * naming that process, its ring left stopped.
 */
class IncomingExportTest {
    static final long LOG_ALL = LogProtocolTest.LOG_ALL;

    @TempDir
    Path dir;

    private static String spec(String id, Path image, Path socket, Map<String, Object> extra) {
        return DaemonRig.exportSpec(id, image, socket, extra);
    }

    private static String qemuIoWrite(Path image) {
        return QemuTools.qemuIoWrite(image).toString();
    }

    private static boolean qemuIo() {
        return QemuTools.installed("qemu-io");
    }

    /** Waits (up to 30 s, a hang guard) until the daemon's output has {@code count} lines containing {@code text}. */
    private static String awaitLog(DaemonRig d, String text, int count) {
        return QemuTools.awaitLine(() -> d.stdout() + d.stderr(), text, count, 30);
    }

    @Test
    @SuppressWarnings("unchecked")
    void oneDaemonHandsAnImageOverFromItsSourceExportToItsIncomingExport() throws Exception {
        Path img = DaemonRig.image(dir, "m.img");
        Path sockA = dir.resolve("a.sock");
        Path sockB = dir.resolve("b.sock");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("a", img, sockA, Map.of()));
            d.result("export.add", spec("b", img, sockB, Map.of("incoming", true)));
            // A second writer of the image is still refused by name.
            Map<String, Object> third = DaemonRig.error(d.call("export.add", spec("c", img, dir.resolve("c.sock"), Map.of())));
            assertTrue(String.valueOf(third.get("message")).contains("already used by export 'a'"), third.toString());
            List<Map<String, Object>> list = (List<Map<String, Object>>) d.result("export.list", null);
            assertEquals(Boolean.TRUE, list.get(1).get("incoming"), list.toString());
            assertEquals(Boolean.FALSE, list.get(0).get("incoming"), list.toString());
            if (qemuIo()) {
                String w = qemuIoWrite(img);
                assertTrue(w.contains("Failed to get \"write\" lock"), w);
            }
            byte[] data = BlkQueue.pattern(8, 8192, 7);
            int logFd = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
            try (TestGuest g = new TestGuest(); QemuFlow src = new QemuFlow(VhostUserFrontend.connect(sockA), g, 1);
                    QemuFlow dst = new QemuFlow(VhostUserFrontend.connect(sockB), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                src.init(LogProtocolTest.PROTOCOL, q);
                long features = src.linuxFeatures() & ~LOG_ALL;
                src.start(features, true, null, q);
                q.write(8, data);
                // The destination's frontend connects (no start) while the source runs.
                dst.init(LogProtocolTest.PROTOCOL, q);
                // Migration: the log, LOG_ALL, the hand-over.
                assertTrue(src.f.request(LogProtocolTest.SET_LOG_BASE,
                        LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), logFd) != null);
                src.f.setFeatures(features | LOG_ALL);
                awaitLog(d, "dirty logging on", 1);
                int[] bases = src.stop(q);
                awaitLog(d, "inactive (writer's locks dropped)", 1);
                dst.start(features, true, bases, q);
                awaitLog(d, "active (writer's locks taken) at the device's start", 1);
                assertArrayEquals(data, q.read(8, 8192), "the destination reads what the source wrote");
                if (qemuIo()) {
                    String w = qemuIoWrite(img);
                    assertTrue(w.contains("Failed to get \"write\" lock"), "refused while b is active: " + w);
                }
                // The old source starting again while b is active is refused: ring stopped, holder named.
                src.start(features, false, bases, q);
                String refused = awaitLog(d, "NOT started", 1);
                assertTrue(refused.contains("Failed to get") && refused.contains("held by"), refused);
            } finally {
                Native.libc().close(logFd);
            }
        }
    }

    @Test
    void anIncomingExportOpensBesideAWritingQemuStorageDaemonAndItsStartIsRefusedNamingIt() throws Exception {
        assumeTrue(QemuTools.installed("qemu-storage-daemon"), "qemu-storage-daemon is not installed");
        Path img = DaemonRig.image(dir, "qsd.img");
        Path qsdSock = dir.resolve("qsd.sock");
        Process qsd = QemuTools.storageDaemon(img, qsdSock, dir.resolve("qsd.log"));
        Path sock = dir.resolve("v.sock");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            DaemonRig.awaitListening(qsdSock, "qemu-storage-daemon");
            // Without incoming the writer qsd refuses it; incoming opens beside it.
            Map<String, Object> e = DaemonRig.error(d.call("export.add", spec("v", img, sock, Map.of())));
            assertTrue(String.valueOf(e.get("message")).contains("lock"), e.toString());
            d.result("export.add", spec("v", img, sock, Map.of("incoming", true)));
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                qemu.init(LogProtocolTest.PROTOCOL, q);
                qemu.start(qemu.linuxFeatures() & ~LOG_ALL, true, null, q);
                String refused = awaitLog(d, "NOT started", 1);
                assertTrue(refused.contains("qemu-storage-daemon (pid " + qsd.pid() + ")"), refused);
                assertNotEquals(-1, refused.indexOf("\"write\""), refused);
            }
        } finally {
            qsd.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
    }
}
