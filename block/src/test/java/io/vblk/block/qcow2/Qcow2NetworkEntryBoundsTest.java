package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.zip.Deflater;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.NetworkDisk;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A hostile image on an NBD export larger than the image: an L2 entry (or a compressed cluster
 * descriptor) names a cluster above the allocation point, where every refcount is 0 and the driver
 * places the new L2 tables, refcount blocks and data it allocates. Served, a guest's in-place write
 * there would overwrite a table the driver puts there later (then trusted). The entry is corrupt:
 * its reads fail with EIO, as for an entry past the end of the disk (rev14a M5).
 */
class Qcow2NetworkEntryBoundsTest {
    private static final int MIB = 1 << 20;
    private static final int CLUSTER = 65536;

    @TempDir
    Path dir;

    private Process nbd;

    @AfterEach
    void stop() throws Exception {
        if (nbd != null) {
            QemuTools.stop(nbd);
        }
    }

    @Test
    void aCopiedEntryAboveTheAllocationPointIsCorrupt() throws Exception {
        Path img = image();
        byte[] tail = tail(0xee);
        long target = patch(img, tail, 0, Qcow2Descriptor.OFLAG_COPIED);
        assertEquals(-Errno.EIO, readCluster1(img), "an L2 entry naming " + target + " above the allocation point");
    }

    @Test
    void aCompressedDescriptorAboveTheAllocationPointIsCorrupt() throws Exception {
        Path img = image();
        byte[] tail = tail(0);
        // A valid compressed cluster (raw deflate, as qcow2 stores it) of 0x5a, above the allocation point.
        byte[] plain = new byte[CLUSTER];
        Arrays.fill(plain, (byte) 0x5a);
        Deflater d = new Deflater(Deflater.DEFAULT_COMPRESSION, true);
        d.setInput(plain);
        d.finish();
        byte[] out = new byte[CLUSTER];
        int n = d.deflate(out);
        d.end();
        long at = 2L * CLUSTER; // into the tail
        System.arraycopy(out, 0, tail, (int) at, n);
        int x = 62 - (16 - 8);
        long sectors = (n + 511) / 512 - 1;
        long target = patch(img, tail, at, Qcow2Descriptor.OFLAG_COMPRESSED | (sectors << x));
        assertEquals(-Errno.EIO, readCluster1(img), "a compressed descriptor naming " + target
                + " above the allocation point");
    }

    /** A 64 MiB image (64 KiB clusters) with guest cluster 0 written by qemu-io: one L2 table. */
    private Path image() throws Exception {
        Path img = DriverRig.create(dir, "h.qcow2", "64M");
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", img.toString());
        assertEquals(0, r.code(), r.output());
        return img;
    }

    private static byte[] tail(int fill) {
        byte[] t = new byte[8 * MIB];
        Arrays.fill(t, (byte) fill);
        return t;
    }

    /**
     * Appends {@code tail} (the export's old bytes past the image) to the file, cluster-aligned, and
     * points guest cluster 1's L2 entry at {@code into} bytes into it, with {@code flags}; returns
     * the host offset named.
     */
    private static long patch(Path img, byte[] tail, long into, long flags) throws Exception {
        byte[] bytes = Files.readAllBytes(img);
        ImageLayout layout = new ImageLayout(bytes);
        assertEquals(CLUSTER, layout.cluster);
        long l2 = layout.l2Tables.get(0);
        int end = (int) Qcow2Image.roundUp(bytes.length, CLUSTER);
        long target = end + into;
        byte[] all = Arrays.copyOf(bytes, end + tail.length);
        System.arraycopy(tail, 0, all, end, tail.length);
        ByteBuffer.wrap(all).putLong((int) l2 + 8, flags | target);
        Files.write(img, all);
        return target;
    }

    /** Reads guest cluster 1 through the image served by qemu-nbd: its status. */
    private int readCluster1(Path img) throws Exception {
        Path sock = dir.resolve("nbd.sock");
        nbd = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "-k", sock.toString(), "-x", "q", "-t", "-e", "4",
                "--cache=none", "--aio=threads", img.toString())).redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu-nbd.log").toFile()).start();
        Qcow2NetworkTest.awaitListening(nbd, sock, dir.resolve("qemu-nbd.log"));
        try (Qcow2Driver d = Qcow2.open(NetworkDisk.open("nbd+unix:///q?socket=" + sock, false), 8,
                Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(CLUSTER);
            int rc = (int) rig.one(rig.read(CLUSTER, b, CLUSTER));
            if (rc >= 0) {
                System.err.println("guest cluster 1 read byte " + (b.buffer().getByte(0) & 0xff));
            }
            return rc;
        }
    }
}
