package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.block.DriverFactory;
import io.vblk.block.NetworkDisk;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * rev16a M1 for qcow2: a factory's {@code sync()} (a migration hand-over's, at GET_VRING_BASE)
 * fails once a flush of the image failed, rather than an fdatasync that succeeds because the
 * failed one consumed the kernel's report (a file), or nothing at all (a network disk whose
 * server lost acknowledged writes).
 */
class Qcow2StickyFlushSyncTest {
    private static final int CLUSTER = 65536;

    @TempDir
    Path dir;

    @Test
    void aFileImagesSyncFailsAfterAFailedFlush() throws Exception {
        Path img = DriverRig.create(dir, "vm.qcow2", "16M", "-o", "cluster_size=" + CLUSTER);
        DriverFactory factory = Qcow2.factory(img, BackendKind.IO_URING, Qcow2Options.defaults());
        try (Qcow2Driver d = (Qcow2Driver) factory.open(16)) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(4096, rig.one(rig.write(0, b, 4096)));
            assertEquals(0, rig.one(rig.flush()));
            factory.sync(); // healthy
            assertEquals(4096, rig.one(rig.write(0, b, 4096)));
            d.image().injectFlushErrno = Errno.EIO; // the write-back failed (no dm-error here: see Image)
            assertEquals(-Errno.EIO, rig.one(rig.flush()));
            assertEquals(-Errno.EIO, rig.one(rig.flush()), "a retried FLUSH fails too");
            assertThrows(UncheckedIOException.class, factory::sync, "the hand-over's sync must not succeed");
        }
    }

    /**
     * A clean close ends with an fdatasync of the file (QEMU's close flushes too), also when no
     * reserved clusters were left to hand back: seen through the image's seam, the close's sync
     * is the flush that meets the injected failure.
     */
    @Test
    void aCleanCloseSyncsTheFile() throws Exception {
        Path img = DriverRig.create(dir, "vm.qcow2", "16M", "-o", "cluster_size=" + CLUSTER);
        Qcow2Driver d = (Qcow2Driver) Qcow2.factory(img, BackendKind.IO_URING, Qcow2Options.defaults()).open(16);
        io.vblk.aio.Image image = d.image();
        try {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(4096, rig.one(rig.write(0, b, 4096)));
            assertEquals(0, rig.one(rig.flush()));
            assertEquals(4096, rig.one(rig.write(0, b, 4096)), "an in-place write left unflushed");
            image.injectFlushErrno = Errno.EIO;
        } finally {
            d.close();
        }
        assertEquals(true, image.flushFailed(), "the close synced the file");
    }

    private Process start(Path img, Path sock) throws Exception {
        Files.deleteIfExists(sock);
        Process p = new ProcessBuilder(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=cache", "file",
                img.toString(), "cache=writeback")).redirectErrorStream(true)
                .redirectOutput(dir.resolve("nbdkit-" + System.nanoTime() + ".out").toFile()).start();
        Qcow2NetworkTest.awaitListening(p, sock, dir.resolve("none"));
        return p;
    }

    /** nbdkit's cache filter keeps acknowledged writes in the process until a flush: SIGKILL loses them. */
    @Test
    void aNetworkImagesSyncFailsAfterTheServerLostAcknowledgedWrites() throws Exception {
        assumeTrue(QemuTools.installed("nbdkit"));
        Path img = DriverRig.create(dir, "vm.qcow2", "16M", "-o", "cluster_size=" + CLUSTER);
        QemuTools.Run w = QemuTools.qemuIo("-f", "qcow2", "-c", "write -P 0x11 0 65536", img.toString());
        assertEquals(0, w.code(), w.output());
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(f.length() + (8 << 20)); // room to allocate in: an NBD export cannot grow
        }
        Path sock = dir.resolve("nbd.sock");
        Process[] server = {start(img, sock)};
        // Strict flushes, as an operator sets them for a server whose cache dies with it.
        System.setProperty(io.vblk.block.nbd.NbdOptions.STRICT_FLUSH_PROPERTY, "true");
        try {
            DriverFactory factory = Qcow2.factory(NetworkDisk.open("nbd+unix:///?socket=" + sock, false), Qcow2Options.defaults());
            Qcow2Driver d = (Qcow2Driver) factory.open(16);
            try {
                DriverRig rig = new DriverRig(d);
                NativeBuffer b = DriverRig.buffer(4096);
                assertEquals(4096, rig.one(rig.write(0, b, 4096)), "a write into an allocated cluster: no flush");
                factory.sync(); // nothing failed yet
                server[0].destroyForcibly(); // the server crashes with the write in its cache
                server[0].waitFor(10, TimeUnit.SECONDS);
                server[0] = start(img, sock);
                assertEquals(-Errno.EIO, rig.one(rig.flush()), "the FLUSH after the reconnect cannot cover the lost write");
                assertThrows(UncheckedIOException.class, factory::sync, "nor may the hand-over's sync succeed");
            } finally {
                try {
                    d.close();
                } catch (UncheckedIOException closeFailed) {
                    // close may report that it could not make the image durable
                }
            }
        } finally {
            System.clearProperty(io.vblk.block.nbd.NbdOptions.STRICT_FLUSH_PROPERTY);
            server[0].destroyForcibly();
            server[0].waitFor(10, TimeUnit.SECONDS);
        }
    }
}
