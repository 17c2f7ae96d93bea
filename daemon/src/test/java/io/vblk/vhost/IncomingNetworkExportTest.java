package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
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
 * {@code export.add} with {@code incoming: true} for a network disk, the destination of a live
 * migration whose source is another export of the same NBD export (qemu-nbd serving one file
 * to both): a qcow2 image on the server opens inactive (nothing written, the autoclear bits of
 * a persistent bitmap included), the source allocates after the destination opened, hands over
 * (tables written back, reserved clusters' refcounts back to 0, a flush) when its frontend stops
 * with dirty logging on, and the destination's start reads header, L1 and refcount tables afresh:
 * it reads everything the source wrote and allocates past the source's clusters; the inactive
 * source's removal writes nothing; {@code qemu-img check} is clean. A raw network disk (nbdkit's
 * file plugin) is accepted as incoming and serves what the source wrote, the source's hand-over
 * a flush (the server's request log shows it); an RBD address that turns librbd's cache on is
 * refused as incoming.
 */
class IncomingNetworkExportTest {
    static final long LOG_ALL = LogProtocolTest.LOG_ALL;
    private static final int CLUSTER = 4096;
    private static final long SIZE = 64L << 20;

    @TempDir
    Path dir;

    private Process serve(Path file, Path sock) throws Exception {
        // One file, several clients (the source's and the destination's exports), as raw bytes.
        Process p = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "-k", sock.toString(), "-x", "q", "-t", "-e", "4",
                file.toString())).redirectErrorStream(true).redirectOutput(dir.resolve(sock.getFileName() + ".log").toFile())
                .start();
        DaemonRig.awaitListening(sock, "qemu-nbd");
        return p;
    }

    private static String spec(String id, Path nbdSock, Path socket, String format, boolean incoming) {
        Map<String, Object> m = new HashMap<>();
        m.put("id", id);
        m.put("image", "nbd+unix:///q?socket=" + nbdSock);
        m.put("socket", socket.toString());
        m.put("format", format);
        if (incoming) {
            m.put("incoming", true);
        }
        return DaemonRig.json(m);
    }

    private static String awaitLog(DaemonRig d, String text, int count) {
        return QemuTools.awaitLine(() -> d.stdout() + d.stderr(), text, count, 30);
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

    /** A qcow2 image with room after it for the clusters both sides allocate (an NBD export cannot grow). */
    private Path qcow2() throws Exception {
        Path img = dir.resolve("vm.qcow2");
        QemuTools.Run r = QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=" + CLUSTER, img.toString(),
                String.valueOf(SIZE));
        assertEquals(0, r.code(), r.output());
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(f.length() + (8L << 20));
        }
        return img;
    }

    @Test
    void aQcow2ImageOnAnNbdExportIsHandedOverAndTheDestinationReadsWhatTheSourceAllocatedAfterItOpened() throws Exception {
        Path img = qcow2();
        Path nbdSock = dir.resolve("q.nbd");
        Process nbd = serve(img, nbdSock);
        Path sockA = dir.resolve("a.sock");
        Path sockB = dir.resolve("b.sock");
        long sector32m = (32L << 20) / 512;
        long sector48m = (48L << 20) / 512;
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("a", nbdSock, sockA, "qcow2", false));
            int logFd = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
            try (TestGuest g = new TestGuest(); QemuFlow src = new QemuFlow(VhostUserFrontend.connect(sockA), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                src.init(LogProtocolTest.PROTOCOL, q);
                long features = src.linuxFeatures() & ~LOG_ALL;
                src.start(features, true, null, q);
                q.write(0, fill(CLUSTER, 0xa1)); // L2 table 0
                byte[] opened = Files.readAllBytes(img);
                d.result("export.add", spec("b", nbdSock, sockB, "qcow2", true));
                assertArrayEquals(opened, Files.readAllBytes(img), "the incoming open wrote nothing");
                try (QemuFlow dst = new QemuFlow(VhostUserFrontend.connect(sockB), g, 1)) {
                    dst.init(LogProtocolTest.PROTOCOL, q);
                    // After the destination opened: a new L2 table, more of table 0.
                    q.write(sector32m, fill(CLUSTER, 0xb2));
                    q.write(16, fill(CLUSTER, 0xc3));
                    q.write(40, fill(512, 0xd4)); // a partial cluster: the rest reads zeros
                    assertTrue(src.f.request(LogProtocolTest.SET_LOG_BASE,
                            LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), logFd) != null);
                    src.f.setFeatures(features | LOG_ALL);
                    awaitLog(d, "dirty logging on", 1);
                    int[] bases = src.stop(q);
                    awaitLog(d, "inactive (written back and flushed; a network disk has no locks) after a stop with dirty"
                            + " logging on", 1);
                    dst.start(features, true, bases, q);
                    awaitLog(d, "active (nothing cached trusted; a network disk has no locks) at the device's start", 1);
                    assertArrayEquals(fill(CLUSTER, 0xa1), q.read(0, CLUSTER));
                    assertArrayEquals(fill(CLUSTER, 0xb2), q.read(sector32m, CLUSTER), "a table made after the open");
                    assertArrayEquals(fill(CLUSTER, 0xc3), q.read(16, CLUSTER));
                    byte[] partial = q.read(40, CLUSTER);
                    assertArrayEquals(fill(512, 0xd4), Arrays.copyOf(partial, 512));
                    assertArrayEquals(new byte[CLUSTER - 512], Arrays.copyOfRange(partial, 512, CLUSTER));
                    // The destination allocates on, past every cluster the source used.
                    q.write(sector48m, fill(4 * CLUSTER, 0xe5));
                    q.write(8, fill(CLUSTER, 0xf6));
                    q.write(sector32m + 64, fill(CLUSTER, 0x97)); // the source's table, a new data cluster
                    assertArrayEquals(fill(CLUSTER, 0xb2), q.read(sector32m, CLUSTER), "not overwritten");
                    assertArrayEquals(fill(CLUSTER, 0xa1), q.read(0, CLUSTER), "not overwritten");
                    q.flush();
                    // Removing the inactive source writes nothing (no refcounts returned twice).
                    byte[] before = Files.readAllBytes(img);
                    d.result("export.remove", DaemonRig.json(Map.of("id", "a", "force", true))); // src still attached
                    assertArrayEquals(before, Files.readAllBytes(img), "the inactive source's removal wrote nothing");
                    dst.stop(q);
                }
            } finally {
                Native.libc().close(logFd);
            }
            d.result("export.remove", DaemonRig.json(Map.of("id", "b")));
        } finally {
            QemuTools.stop(nbd);
        }
        QemuTools.Run check = QemuTools.qemuImg("check", "-f", "qcow2", img.toString());
        assertEquals(0, check.code(), check.output());
        assertTrue(check.output().contains("No errors were found") && !check.output().contains("leaked"), check.output());
        qemuIoPattern(img, 0, CLUSTER, 0xa1);
        qemuIoPattern(img, 32L << 20, CLUSTER, 0xb2);
        qemuIoPattern(img, (32L << 20) + 64 * 512, CLUSTER, 0x97);
        qemuIoPattern(img, 8 * 512, CLUSTER, 0xf6);
        qemuIoPattern(img, 16 * 512, CLUSTER, 0xc3);
        qemuIoPattern(img, 40 * 512, 512, 0xd4);
        qemuIoPattern(img, 48L << 20, 4 * CLUSTER, 0xe5);
    }

    @Test
    void anIncomingQcow2ImageOnAnNbdExportThatNeverStartsWritesNothingNotEvenItsAutoclearBits() throws Exception {
        Path img = qcow2();
        // A persistent bitmap sets an autoclear bit, which a writable active open clears.
        QemuTools.Run r = QemuTools.qemuImg("bitmap", "--add", "-f", "qcow2", img.toString(), "b0");
        assertEquals(0, r.code(), r.output());
        byte[] before = Files.readAllBytes(img);
        Path nbdSock = dir.resolve("q.nbd");
        Process nbd = serve(img, nbdSock);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Path sock = dir.resolve("b.sock");
            d.result("export.add", spec("b", nbdSock, sock, "qcow2", true));
            try (TestGuest g = new TestGuest(); QemuFlow dst = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
                dst.init(LogProtocolTest.PROTOCOL, g.queue(0, 64, true));
            }
            d.result("export.remove", DaemonRig.json(Map.of("id", "b")));
        } finally {
            QemuTools.stop(nbd);
        }
        assertArrayEquals(before, Files.readAllBytes(img));
    }

    @Test
    void aRawNbdDiskIsAcceptedAsIncomingAndServesWhatTheSourceWrote() throws Exception {
        Path raw = dir.resolve("raw.img");
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(raw.toFile(), "rw")) {
            f.setLength(8L << 20);
        }
        Path nbdSock = dir.resolve("r.nbd");
        Path requests = dir.resolve("requests.log");
        // nbdkit's file plugin, its log filter recording every request: the source's flush.
        assumeTrue(QemuTools.installed("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Process nbd = new ProcessBuilder(List.of("nbdkit", "-f", "-U", nbdSock.toString(), "--filter=log", "file",
                raw.toString(), "logfile=" + requests)).redirectErrorStream(true)
                .redirectOutput(dir.resolve("nbdkit.out").toFile()).start();
        DaemonRig.awaitListening(nbdSock, "nbdkit");
        Path sockA = dir.resolve("a.sock");
        Path sockB = dir.resolve("b.sock");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("a", nbdSock, sockA, "raw", false));
            int logFd = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
            try (TestGuest g = new TestGuest(); QemuFlow src = new QemuFlow(VhostUserFrontend.connect(sockA), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                src.init(LogProtocolTest.PROTOCOL, q);
                long features = src.linuxFeatures() & ~LOG_ALL;
                src.start(features, true, null, q);
                q.write(0, fill(CLUSTER, 0x5a));
                d.result("export.add", spec("b", nbdSock, sockB, "raw", true));
                awaitLog(d, "incoming: a raw network disk, no locks and no cache to take over", 1);
                try (QemuFlow dst = new QemuFlow(VhostUserFrontend.connect(sockB), g, 1)) {
                    dst.init(LogProtocolTest.PROTOCOL, q);
                    q.write(64, fill(CLUSTER, 0x6b)); // after the destination connected
                    assertTrue(src.f.request(LogProtocolTest.SET_LOG_BASE,
                            LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), logFd) != null);
                    src.f.setFeatures(features | LOG_ALL);
                    awaitLog(d, "dirty logging on", 1);
                    int[] bases = src.stop(q);
                    awaitLog(d, "inactive (written back and flushed; a network disk has no locks)", 1);
                    assertTrue(lastWriteFlushed(requests), "the source flushed at the hand-over");
                    dst.start(features, true, bases, q);
                    assertArrayEquals(fill(CLUSTER, 0x5a), q.read(0, CLUSTER));
                    assertArrayEquals(fill(CLUSTER, 0x6b), q.read(64, CLUSTER));
                    q.write(128, fill(CLUSTER, 0x7c));
                    q.flush();
                    dst.stop(q);
                }
            } finally {
                Native.libc().close(logFd);
            }
        } finally {
            QemuTools.stop(nbd);
        }
        byte[] file = Files.readAllBytes(raw);
        assertArrayEquals(fill(CLUSTER, 0x7c), Arrays.copyOfRange(file, 128 * 512, 128 * 512 + CLUSTER));
    }

    /** Whether nbdkit's log filter saw a flush after the last write ("connection=N Write id=..", "... Flush id=.."). */
    private static boolean lastWriteFlushed(Path log) throws Exception {
        List<String> lines = Files.readAllLines(log);
        int lastWrite = -1;
        int lastFlush = -1;
        for (int i = 0; i < lines.size(); i++) {
            String l = lines.get(i);
            if (l.contains(" Write id=") && !l.contains("return=")) {
                lastWrite = i;
            } else if (l.contains(" Flush id=") && !l.contains("return=")) {
                lastFlush = i;
            }
        }
        assertTrue(lastWrite >= 0, "the log filter logs writes: " + lines);
        return lastFlush > lastWrite;
    }

    @Test
    void anIncomingRbdDiskWithLibrbdsCacheOnIsRefused() throws Exception {
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "n",
                    "image", "rbd:pool/img:rbd_cache=true", "socket", dir.resolve("n.sock").toString(), "incoming", true))));
            assertTrue(String.valueOf(e.get("message")).contains("rbd_cache"), e.toString());
        }
    }
}
