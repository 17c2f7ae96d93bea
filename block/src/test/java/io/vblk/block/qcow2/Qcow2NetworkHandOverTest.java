package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.NetworkDisk;
import io.vblk.block.rbd.CephCluster;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A live migration's hand-over of a qcow2 image whose bytes lie on a server, between two drivers
 * with a connection each (no locks there): an NBD export of nbdkit's file plugin (its log filter
 * records every request) and an RBD image in a one-node Ceph cluster. The incoming driver opens
 * inactive, writes nothing and refuses requests; the source allocates after it opened; each hand-over writes the tables back,
 * returns reserved clusters (refcount 0: a network disk is not cut back) and flushes through the
 * back end, also when it has nothing else to write; each activation reads everything again, so
 * a migration back and forth keeps no stale L2 table and no side allocates over the other's
 * clusters; an inactive driver's close writes nothing. {@code qemu-img check} of the bytes is
 * clean.
 */
class Qcow2NetworkHandOverTest {
    private static final int CLUSTER = 4096;
    private static final long SIZE = 64L << 20;

    @TempDir
    Path dir;

    private Process nbd;

    @AfterEach
    void stopServer() {
        if (nbd != null) {
            QemuTools.stop(nbd);
        }
    }

    /** A qcow2 image with room after it to allocate in (an NBD export cannot grow). */
    private Path image() throws Exception {
        Path img = DriverRig.create(dir, "vm.qcow2", String.valueOf(SIZE), "-o", "cluster_size=" + CLUSTER);
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(f.length() + (8L << 20));
        }
        return img;
    }

    private String serveNbd(Path file, Path log) throws Exception {
        assumeTrue(QemuTools.installed("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path sock = dir.resolve("nbd.sock");
        // nbdkit's file plugin takes any number of connections to one file; the log filter
        // writes a line per request, which shows the hand-over's flush.
        nbd = new ProcessBuilder(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=log", "file", file.toString(),
                "logfile=" + log)).redirectErrorStream(true).redirectOutput(dir.resolve("nbdkit.out").toFile()).start();
        Qcow2NetworkTest.awaitListening(nbd, sock, dir.resolve("nbdkit.out"));
        return "nbd+unix:///?socket=" + sock;
    }

    private static Qcow2Driver open(String address, boolean incoming) {
        NetworkDisk disk = NetworkDisk.open(address, false);
        return Qcow2.open(disk, 16, Qcow2Options.defaults().incoming(incoming));
    }

    private static void write(Qcow2Driver d, long offset, int len, int value) {
        NativeBuffer b = DriverRig.buffer(len);
        byte[] data = new byte[len];
        Arrays.fill(data, (byte) value);
        DriverRig.fill(b, data, 0, len);
        DriverRig rig = new DriverRig(d);
        assertEquals(len, rig.one(rig.write(offset, b, len)), "write at " + offset);
    }

    private static void assertReads(Qcow2Driver d, long offset, int len, int value) {
        NativeBuffer b = DriverRig.buffer(len);
        DriverRig.poison(b);
        DriverRig rig = new DriverRig(d);
        assertEquals(len, rig.one(rig.read(offset, b, len)), "read at " + offset);
        byte[] want = new byte[len];
        Arrays.fill(want, (byte) value);
        assertArrayEquals(want, DriverRig.bytes(b, len), "bytes at " + offset);
    }

    private static void assertRefused(Qcow2Driver d) {
        NativeBuffer b = DriverRig.buffer(4096);
        DriverRig rig = new DriverRig(d);
        assertEquals(-Errno.EROFS, rig.write(0, b, 4096), "an inactive image refuses writes");
        assertEquals(-Errno.EIO, rig.read(0, b, 4096), "its tables may be stale: no reads either");
    }

    private static void assertCheckClean(Path img) {
        QemuTools.Run check = QemuTools.qemuImg("check", "-f", "qcow2", img.toString());
        assertEquals(0, check.code(), check.output());
        assertTrue(check.output().contains("No errors were found"), check.output());
        assertFalse(check.output().contains("leaked"), check.output());
    }

    private static void qemuIoPattern(Path img, long offset, int len, int value) {
        QemuTools.Run r = QemuTools.qemuIo("-r", "-f", "qcow2", "-c",
                "read -P 0x" + Integer.toHexString(value) + " " + offset + " " + len, img.toString());
        assertEquals(0, r.code(), r.output());
        assertFalse(r.output().contains("failed"), "qemu-io reads 0x" + Integer.toHexString(value) + " at " + offset
                + ": " + r.output());
    }

    /** The server-side hook of a migration: the bytes (for "nothing written") and the source's flush. */
    private interface Server {
        byte[] bytes() throws Exception;

        /** Whether the last write the server saw so far was followed by a flush. */
        default boolean lastWriteFlushed() throws Exception {
            return true;
        }
    }

    /**
     * A -> B -> A -> B with A allocating after B opened, B allocating in a table A had cached, A
     * (back again) only overwriting, so its hand-over has no reserved cluster to return and its
     * flush is the only one; returns with both drivers closed.
     */
    private static void migrate(String address, Server server) throws Exception {
        Qcow2Driver src = open(address, false);
        Qcow2Driver dst = null;
        try {
            write(src, 0, CLUSTER, 0xa1); // L2 table 0
            byte[] before = server.bytes();
            dst = open(address, true);
            assertArrayEquals(before, server.bytes(), "the incoming open wrote nothing");
            assertFalse(dst.active());
            assertRefused(dst);
            write(src, 32L << 20, CLUSTER, 0xb2); // a new L2 table after the destination opened
            write(src, 2 * CLUSTER, CLUSTER, 0xc3);
            write(src, 48L << 20, 2 * CLUSTER, 0xd4);

            assertTrue(src.inactivate());
            assertRefused(src);
            assertTrue(server.lastWriteFlushed(), "the source's hand-over flushed");
            assertTrue(dst.activate());
            assertReads(dst, 0, CLUSTER, 0xa1);
            assertReads(dst, 32L << 20, CLUSTER, 0xb2);
            assertReads(dst, 2 * CLUSTER, CLUSTER, 0xc3);
            assertReads(dst, 48L << 20, 2 * CLUSTER, 0xd4);
            write(dst, (32L << 20) + CLUSTER, CLUSTER, 0xe5); // in table 1, which the source cached
            write(dst, 56L << 20, 4 * CLUSTER, 0xf6); // past every cluster the source used
            assertReads(dst, 32L << 20, CLUSTER, 0xb2);
            assertReads(dst, 48L << 20, 2 * CLUSTER, 0xd4);

            assertTrue(dst.inactivate());
            assertTrue(server.lastWriteFlushed());
            assertTrue(src.activate());
            assertReads(src, (32L << 20) + CLUSTER, CLUSTER, 0xe5);
            assertReads(src, 56L << 20, 4 * CLUSTER, 0xf6);
            write(src, 2 * CLUSTER, CLUSTER, 0x17); // an overwrite: nothing allocated, nothing reserved

            assertTrue(src.inactivate());
            assertTrue(server.lastWriteFlushed(), "a hand-over with no reserved cluster to return flushed too");
            assertTrue(dst.activate());
            assertReads(dst, 2 * CLUSTER, CLUSTER, 0x17);
            write(dst, 40L << 20, CLUSTER, 0x28);

            byte[] beforeClose = server.bytes();
            src.close();
            src = null;
            assertArrayEquals(beforeClose, server.bytes(), "an inactive driver's close writes nothing");
        } finally {
            if (src != null) {
                src.close();
            }
            if (dst != null) {
                dst.close();
            }
        }
    }

    private static void verify(Path img) {
        assertCheckClean(img);
        qemuIoPattern(img, 0, CLUSTER, 0xa1);
        qemuIoPattern(img, 2 * CLUSTER, CLUSTER, 0x17);
        qemuIoPattern(img, 32L << 20, CLUSTER, 0xb2);
        qemuIoPattern(img, (32L << 20) + CLUSTER, CLUSTER, 0xe5);
        qemuIoPattern(img, 40L << 20, CLUSTER, 0x28);
        qemuIoPattern(img, 48L << 20, 2 * CLUSTER, 0xd4);
        qemuIoPattern(img, 56L << 20, 4 * CLUSTER, 0xf6);
    }

    @Test
    void aQcow2ImageOnAnNbdExportIsHandedOverBackAndForth() throws Exception {
        Path img = image();
        Path log = dir.resolve("nbdkit-requests.log");
        String address = serveNbd(img, log);
        migrate(address, new Server() {
            @Override
            public byte[] bytes() throws Exception {
                return Files.readAllBytes(img);
            }

            @Override
            public boolean lastWriteFlushed() throws Exception {
                // The log filter's request lines ("connection=N Write id=..", "... Flush id=..").
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
        });
        verify(img);
    }

    @Test
    void aQcow2ImageOnAnRbdImageIsHandedOverBackAndForth() throws Exception {
        assumeTrue(CephCluster.installed(), "Ceph is not installed here (.ci/run installs it): RBD test skipped");
        Path img = image();
        try (CephCluster ceph = CephCluster.start(dir.resolve("cluster"), "memstore")) {
            ceph.run("rbd", "import", img.toString(), "rbd/m");
            Path exported = dir.resolve("exported.qcow2");
            migrate(ceph.address("m"), () -> {
                Files.deleteIfExists(exported);
                ceph.run("rbd", "export", "rbd/m", exported.toString());
                return Files.readAllBytes(exported);
            });
            Files.deleteIfExists(exported);
            ceph.run("rbd", "export", "rbd/m", exported.toString());
            verify(exported);
        }
    }
}
