package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
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
 * qcow2 images whose bytes lie on a network disk, with real servers: a qcow2 file served as raw
 * bytes by {@code qemu-nbd -f raw}, and a qcow2 file imported into a one-node Ceph cluster with
 * {@code rbd import}. Reads of what qemu-io wrote, allocating writes, then {@code qemu-img check}
 * and qemu-io's pattern reads of the bytes afterwards.
 */
class Qcow2NetworkTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private Process nbd;

    @AfterEach
    void stopServer() throws Exception {
        if (nbd != null) {
            io.vblk.testkit.QemuTools.stop(nbd);
        }
    }

    /** A 64 MiB qcow2 image with 0xab in [0, 1 MiB) and 0xcd in [8 MiB, 9 MiB), written by qemu-io. */
    private Path image(String name) throws Exception {
        Path img = DriverRig.create(dir, name, "64M");
        qemuIo(img, "write -P 0xab 0 1M");
        qemuIo(img, "write -P 0xcd 8M 1M");
        return img;
    }

    private static String qemuIo(Path img, String command) throws Exception {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", command, img.toString());
        assertEquals(0, r.code(), "qemu-io " + command + ": " + r.output());
        assertFalse(r.output().contains("Pattern verification failed"), "qemu-io " + command + ": " + r.output());
        return r.output();
    }

    private String serveNbd(Path file) throws Exception {
        Path sock = dir.resolve("nbd.sock");
        nbd = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "-k", sock.toString(), "-x", "q", "-t", "-e", "4",
                "--cache=none", "--aio=threads", file.toString())).redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu-nbd.log").toFile()).start();
        awaitListening(nbd, sock, dir.resolve("qemu-nbd.log"));
        return "nbd+unix:///q?socket=" + sock;
    }

    /**
     * Waits until {@code server} takes connections on {@code sock} (a probe connect), for up to
     * 60 s: a qemu-nbd's start took seconds on a loaded CI machine (5 s of waiting for the file was
     * tight), and the file alone is not enough, since it exists from bind, before listen, and a
     * connect in between is refused.
     */
    static void awaitListening(Process server, Path sock, Path log) throws Exception {
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(60);
        while (true) {
            try (java.nio.channels.SocketChannel probe = java.nio.channels.SocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
                probe.connect(java.net.UnixDomainSocketAddress.of(sock));
                return;
            } catch (java.io.IOException e) {
                if (!server.isAlive() || System.nanoTime() > deadline) {
                    throw new AssertionError("qemu-nbd does not take connections on " + sock + " (" + e + "): "
                            + (Files.exists(log) ? Files.readString(log) : ""), e);
                }
            }
            Thread.sleep(20);
        }
    }

    private static void expect(DriverRig rig, NativeBuffer b, long offset, int len, int value) {
        assertEquals(len, rig.one(rig.read(offset, b, len)), "read at " + offset);
        for (int i = 0; i < len; i++) {
            if ((b.buffer().getByte(i) & 0xff) != value) {
                throw new AssertionError("byte " + (offset + i) + " is " + (b.buffer().getByte(i) & 0xff) + ", not " + value);
            }
        }
    }

    private static void write(DriverRig rig, NativeBuffer b, long offset, int len, int value) {
        b.buffer().setMemory(0, len, (byte) value);
        assertEquals(len, rig.one(rig.write(offset, b, len)), "write at " + offset);
    }

    /** Reads, overwrites and allocating writes through the driver; the caller checks the bytes afterwards. */
    private static void exercise(Qcow2Driver d) {
        DriverRig rig = new DriverRig(d);
        NativeBuffer b = DriverRig.buffer(MIB);
        assertEquals(64L * MIB, d.sizeBytes());
        expect(rig, b, 0, MIB, 0xab);
        expect(rig, b, 8 * MIB, MIB, 0xcd);
        expect(rig, b, 20 * MIB, 64 * 1024, 0); // unallocated
        write(rig, b, 4096, 8192, 0x11); // in place, inside an allocated cluster
        write(rig, b, 32L * MIB, MIB, 0x22); // allocating
        write(rig, b, 63L * MIB + 4096, 4096, 0x33); // allocating, copy-on-write of zeros around it
        assertEquals(0, rig.one(rig.flush()));
        expect(rig, b, 32L * MIB, MIB, 0x22);
        expect(rig, b, 4096, 8192, 0x11);
        expect(rig, b, 63L * MIB + 4096, 4096, 0x33);
        expect(rig, b, 63L * MIB, 4096, 0);
        // Online resize: the header and L1 table on the network disk, then I/O past the old end.
        try {
            d.resize(128L * MIB);
        } catch (java.io.IOException e) {
            throw new AssertionError(e);
        }
        assertEquals(128L * MIB, d.sizeBytes());
        write(rig, b, 100L * MIB, 65536, 0x44);
        expect(rig, b, 100L * MIB, 65536, 0x44);
    }

    private static void verifyWith(Path img) throws Exception {
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0xab 0 4096");
        qemuIo(img, "read -P 0x11 4096 8192");
        qemuIo(img, "read -P 0xab 12288 1036288");
        qemuIo(img, "read -P 0xcd 8M 1M");
        qemuIo(img, "read -P 0x22 32M 1M");
        qemuIo(img, "read -P 0x33 " + (63L * MIB + 4096) + " 4096");
        qemuIo(img, "read -P 0 63M 4096");
        qemuIo(img, "read -P 0x44 100M 64k");
        QemuTools.Run info = DriverRig.run("qemu-img", "info", "--output=json", img.toString());
        assertTrue(info.output().contains("\"virtual-size\": " + 128L * MIB), info.output());
    }

    @Test
    void qcow2OnAnNbdExportWithRoomToGrow() throws Exception {
        Path img = image("n.qcow2");
        long used = Files.size(img);
        // The export is larger than the image it holds (as a cloud volume is): clusters are
        // allocated after the last one in use, not at the export's end.
        DriverRig.run("truncate", "-s", "+8M", img.toString());
        String address = serveNbd(img);
        NetworkDisk disk = NetworkDisk.open(address, false);
        assertEquals(64L * MIB, Qcow2.virtualSize(disk));
        try (Qcow2Driver d = Qcow2.open(disk, 32, Qcow2Options.defaults())) {
            exercise(d);
        }
        io.vblk.testkit.QemuTools.stop(nbd);
        nbd = null;
        assertEquals(used + 8 * MIB, Files.size(img), "an NBD export keeps its size");
        verifyWith(img);
    }

    @Test
    void anNbdExportWithoutRoomFailsAllocatingWritesWithEnospcAndKeepsTheRest() throws Exception {
        Path img = image("full.qcow2");
        String address = serveNbd(img);
        try (Qcow2Driver d = Qcow2.open(NetworkDisk.open(address, false), 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(64 * 1024);
            expect(rig, b, 8 * MIB, 64 * 1024, 0xcd);
            b.buffer().setMemory(0, 65536, (byte) 0x44);
            assertEquals(-Errno.ENOSPC, rig.one(rig.write(40L * MIB, b, 65536)));
            write(rig, b, 0, 65536, 0x55); // in place still works
            expect(rig, b, 0, 65536, 0x55);
        }
        io.vblk.testkit.QemuTools.stop(nbd);
        nbd = null;
        assertEquals(0, DriverRig.run("qemu-img", "check", img.toString()).code());
        qemuIo(img, "read -P 0x55 0 64k");
        qemuIo(img, "read -P 0 40M 64k");
    }

    @Test
    void aRawNbdDiskRefusesAnOnlineResizeWithTheReason() throws Exception {
        Path img = dir.resolve("raw.img");
        DriverRig.run("truncate", "-s", "16M", img.toString());
        NetworkDisk disk = NetworkDisk.open(serveNbd(img), false);
        try (io.vblk.block.BlockDriver d = disk.open(4)) {
            UnsupportedOperationException e = org.junit.jupiter.api.Assertions.assertThrows(
                    UnsupportedOperationException.class, () -> d.resize(32L * MIB));
            assertTrue(e.getMessage().contains("the server owns the size"), e.getMessage());
            assertEquals(16L * MIB, d.sizeBytes());
        }
    }

    @Test
    void aReadOnlyExportServesTheImageReadOnly() throws Exception {
        Path img = image("ro.qcow2");
        Path sock = dir.resolve("nbd.sock");
        nbd = new ProcessBuilder(List.of("qemu-nbd", "-r", "-f", "raw", "-k", sock.toString(), "-x", "q", "-t",
                img.toString())).redirectErrorStream(true).redirectOutput(dir.resolve("qemu-nbd.log").toFile()).start();
        awaitListening(nbd, sock, dir.resolve("qemu-nbd.log"));
        try (Qcow2Driver d = Qcow2.open(NetworkDisk.open("nbd+unix:///q?socket=" + sock, false), 8,
                Qcow2Options.defaults())) {
            assertTrue(d.readOnly());
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(64 * 1024);
            expect(rig, b, 0, 65536, 0xab);
            assertEquals(-Errno.EROFS, rig.write(0, b, 4096));
        }
    }

    /**
     * rev15a: an image on a server names a local backing file. Its bytes (whoever controls the
     * server) would choose which file of this host the daemon opens and serves to the guest:
     * refused unless a backing directory confines the name, then followed within it only.
     */
    @Test
    void aNetworkImagesLocalBackingNameIsRefusedUnlessABackingDirectoryConfinesIt() throws Exception {
        Path images = Files.createDirectories(dir.resolve("images"));
        Path elsewhere = Files.createDirectories(dir.resolve("elsewhere"));
        byte[] base = new byte[MIB];
        java.util.Arrays.fill(base, (byte) 0x5a);
        Files.write(images.resolve("base.raw"), base);
        Path img = DriverRig.create(dir, "net.qcow2", String.valueOf(MIB), "-u", "-b",
                images.resolve("base.raw").toString(), "-F", "raw");
        String address = serveNbd(img);
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(NetworkDisk.open(address, true), 8, Qcow2Options.defaults().readOnly(true)).close(),
                "a network image's absolute local backing name was followed by default");
        assertTrue(e.getMessage().contains("network disk") && e.getMessage().contains("backing directory"), e.getMessage());
        e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(NetworkDisk.open(address, true), 8, Qcow2Options.defaults().readOnly(true)
                        .backingDir(elsewhere)).close());
        assertTrue(e.getMessage().contains("outside"), e.getMessage());
        try (Qcow2Driver d = Qcow2.open(NetworkDisk.open(address, true), 8, Qcow2Options.defaults().readOnly(true)
                .backingDir(images))) {
            expect(new DriverRig(d), DriverRig.buffer(65536), 0, 65536, 0x5a);
        }
    }

    @Test
    void qcow2OnAnRbdImageGrowsTheImageAsItAllocates() throws Exception {
        assumeTrue(CephCluster.installed(), "Ceph is not installed here (.ci/run installs it): RBD test skipped");
        Path img = image("r.qcow2");
        try (CephCluster ceph = CephCluster.start(dir.resolve("cluster"), "memstore")) {
            ceph.run("rbd", "import", img.toString(), "rbd/q2");
            long imported = Long.parseLong(ceph.run("rbd", "info", "--format", "json", "rbd/q2")
                    .replaceAll("(?s).*\"size\":\\s*(\\d+).*", "$1"));
            NetworkDisk disk = NetworkDisk.open(ceph.address("q2"), false);
            // As the daemon opens it: the header first (a probe), then the one driver of the factory.
            assertEquals(64L * MIB, Qcow2.virtualSize(disk));
            try (Qcow2Driver d = (Qcow2Driver) Qcow2.factory(disk, Qcow2Options.defaults()).open(32)) {
                exercise(d);
            }
            long grown = Long.parseLong(ceph.run("rbd", "info", "--format", "json", "rbd/q2")
                    .replaceAll("(?s).*\"size\":\\s*(\\d+).*", "$1"));
            assertTrue(grown > imported, "the RBD image grew (" + imported + " -> " + grown + ")");
            Path back = dir.resolve("back.qcow2");
            ceph.run("rbd", "export", "rbd/q2", back.toString());
            verifyWith(back);
        }
    }
}
