package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.Arrays;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.QemuTools;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * {@code export.add} with {@code incoming: true} for a qcow2 image (over a raw backing file),
 * the destination of a live migration: one daemon serves the source's and the destination's
 * export of one image; the source allocates (new L2 tables, refcounts, the file grows) after
 * the destination opened; at the hand-over the source drains, returns its reserved clusters and
 * drops to inactive, the destination's start takes the writer's locks and reads the metadata
 * afresh, so it reads every byte the source wrote; the old source's restart is refused, and its
 * removal writes nothing. {@code qemu-img check} is clean after the destination wrote more. An
 * incoming export that never starts writes nothing at all. A qcow2 image on a network disk:
 * {@link IncomingNetworkExportTest}.
 */
class IncomingQcow2ExportTest {
    static final long LOG_ALL = LogProtocolTest.LOG_ALL;
    private static final int CLUSTER = 4096;
    private static final long SIZE = 64L << 20;

    @TempDir
    Path dir;

    private static String spec(String id, Path image, Path socket, Map<String, Object> extra) {
        Map<String, Object> m = new java.util.HashMap<>(extra);
        m.put("format", "qcow2");
        return DaemonRig.exportSpec(id, image, socket, m);
    }

    private static String awaitLog(DaemonRig d, String text, int count) {
        return QemuTools.awaitLine(() -> d.stdout() + d.stderr(), text, count, 30);
    }

    private Path overlay() throws Exception {
        Path base = dir.resolve("base.raw");
        try (RandomAccessFile f = new RandomAccessFile(base.toFile(), "rw")) {
            f.setLength(SIZE);
            byte[] b = new byte[1 << 20];
            Arrays.fill(b, (byte) 0x11);
            f.write(b);
        }
        Path img = dir.resolve("vm.qcow2");
        QemuTools.Run r = QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=" + CLUSTER, "-b",
                base.toString(), "-F", "raw", img.toString(), String.valueOf(SIZE));
        assertEquals(0, r.code(), r.output());
        return img;
    }

    private static byte[] fill(int len, int value) {
        byte[] b = new byte[len];
        Arrays.fill(b, (byte) value);
        return b;
    }

    private static void qemuIoPattern(Path img, long offset, int len, int value) {
        QemuTools.Run r = QemuTools.qemuIo("-r", "-f", "qcow2", "-c",
                "read -P 0x" + Integer.toHexString(value) + " " + offset + " " + len, img.toString());
        assertEquals(0, r.code(), r.output());
        assertFalse(r.output().contains("failed"), "0x" + Integer.toHexString(value) + " at " + offset + ": " + r.output());
    }

    @Test
    void oneDaemonHandsAQcow2ImageOverAndTheDestinationReadsWhatTheSourceAllocatedAfterItOpened() throws Exception {
        Path img = overlay();
        Path sockA = dir.resolve("a.sock");
        Path sockB = dir.resolve("b.sock");
        long sector32m = (32L << 20) / 512;
        long sector48m = (48L << 20) / 512;
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("a", img, sockA, Map.of()));
            int logFd = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
            try (TestGuest g = new TestGuest(); QemuFlow src = new QemuFlow(VhostUserFrontend.connect(sockA), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                src.init(LogProtocolTest.PROTOCOL, q);
                long features = src.linuxFeatures() & ~LOG_ALL;
                src.start(features, true, null, q);
                q.write(0, fill(CLUSTER, 0xa1)); // L2 table 0
                d.result("export.add", spec("b", img, sockB, Map.of("incoming", true)));
                try (QemuFlow dst = new QemuFlow(VhostUserFrontend.connect(sockB), g, 1)) {
                    dst.init(LogProtocolTest.PROTOCOL, q);
                    // After the destination opened: a new L2 table, more of table 0, a partial
                    // cluster copied from the backing file.
                    q.write(sector32m, fill(CLUSTER, 0xb2));
                    q.write(16, fill(CLUSTER, 0xc3));
                    q.write(40, fill(512, 0xd4));
                    // Migration: the log, LOG_ALL, the hand-over.
                    assertTrue(src.f.request(LogProtocolTest.SET_LOG_BASE,
                            LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), logFd) != null);
                    src.f.setFeatures(features | LOG_ALL);
                    awaitLog(d, "dirty logging on", 1);
                    int[] bases = src.stop(q);
                    awaitLog(d, "inactive (writer's locks dropped)", 1);
                    dst.start(features, true, bases, q);
                    awaitLog(d, "active (writer's locks taken) at the device's start", 1);
                    assertArrayEquals(fill(CLUSTER, 0xa1), q.read(0, CLUSTER));
                    assertArrayEquals(fill(CLUSTER, 0xb2), q.read(sector32m, CLUSTER), "a table made after the open");
                    assertArrayEquals(fill(CLUSTER, 0xc3), q.read(16, CLUSTER));
                    byte[] cow = q.read(40, CLUSTER);
                    assertArrayEquals(fill(512, 0xd4), Arrays.copyOf(cow, 512));
                    assertArrayEquals(fill(CLUSTER - 512, 0x11), Arrays.copyOfRange(cow, 512, CLUSTER), "the backing file's");
                    q.write(sector48m, fill(4 * CLUSTER, 0xe5)); // the destination allocates on
                    q.write(8, fill(CLUSTER, 0xf6));
                    // The old source's restart is refused while the destination writes.
                    src.start(features, false, bases, q);
                    String refused = awaitLog(d, "NOT started", 1);
                    assertTrue(refused.contains("Failed to get") && refused.contains("held by"), refused);
                    // Removing the inactive source writes nothing (no refcounts, no truncation).
                    byte[] before = Files.readAllBytes(img);
                    d.result("export.remove", DaemonRig.json(Map.of("id", "a", "force", true))); // src still attached
                    assertArrayEquals(before, Files.readAllBytes(img), "the inactive source's removal wrote nothing");
                }
            } finally {
                Native.libc().close(logFd);
            }
        }
        QemuTools.Run check = QemuTools.qemuImg("check", "-f", "qcow2", img.toString());
        assertEquals(0, check.code(), check.output());
        assertTrue(check.output().contains("No errors were found") && !check.output().contains("leaked"), check.output());
        qemuIoPattern(img, 0, CLUSTER, 0xa1);
        qemuIoPattern(img, 32L << 20, CLUSTER, 0xb2);
        qemuIoPattern(img, 8 * 512, CLUSTER, 0xf6);
        qemuIoPattern(img, 16 * 512, CLUSTER, 0xc3);
        qemuIoPattern(img, 40 * 512, 512, 0xd4);
        qemuIoPattern(img, 48L << 20, 4 * CLUSTER, 0xe5);
    }

    @Test
    void anIncomingQcow2ExportThatNeverStartsWritesNothing() throws Exception {
        Path img = overlay();
        FileTime mtime = FileTime.fromMillis(1_000_000_000_000L);
        Files.setLastModifiedTime(img, mtime);
        byte[] before = Files.readAllBytes(img);
        Path sock = dir.resolve("b.sock");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("b", img, sock, Map.of("incoming", true)));
            try (TestGuest g = new TestGuest(); QemuFlow dst = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
                dst.init(LogProtocolTest.PROTOCOL, g.queue(0, 64, true));
                assertEquals(QemuTools.INACTIVE_BYTES, QemuTools.heldLockBytes(img), "a reader that shares writing");
            }
            d.result("export.remove", DaemonRig.json(Map.of("id", "b")));
        }
        assertArrayEquals(before, Files.readAllBytes(img));
        assertEquals(mtime, Files.getLastModifiedTime(img));
    }
}
