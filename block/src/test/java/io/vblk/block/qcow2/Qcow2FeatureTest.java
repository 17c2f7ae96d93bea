package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/** Compressed clusters, every refcount width, version 2 images, read-only opens. */
class Qcow2FeatureTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private byte[] randomRaw(Path p, int size, long seed) throws Exception {
        byte[] data = new byte[size];
        new Random(seed).nextBytes(data);
        // Some zero runs, which qemu-img convert leaves unallocated.
        Arrays.fill(data, size / 4, size / 4 + 3 * 65536, (byte) 0);
        Files.write(p, data);
        return data;
    }

    @Test
    void compressedClustersReadBackAndTakeCopyOnWrite() throws Exception {
        compressedRoundTrip("zlib");
    }

    /** compression_type = 1: the same reads and copy-on-write through zstd-jni. */
    @Test
    void zstdCompressedClustersReadBackAndTakeCopyOnWrite() throws Exception {
        compressedRoundTrip("zstd");
    }

    private void compressedRoundTrip(String type) throws Exception {
        Path raw = dir.resolve("src.raw");
        byte[] model = randomRaw(raw, 4 * MIB, 7);
        // Compressible halves so that the clusters really are stored compressed.
        for (int i = 0; i < model.length; i += 8192) {
            Arrays.fill(model, i, i + 4096, (byte) (i >>> 13));
        }
        Files.write(raw, model);
        Path img = dir.resolve("c.qcow2");
        DriverRig.qemuImg("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=" + type,
                raw.toString(), img.toString());
        byte[] header = Arrays.copyOf(Files.readAllBytes(img), 112);
        assertEquals(type.equals("zstd") ? Qcow2Descriptor.COMPRESSION_ZSTD : Qcow2Descriptor.COMPRESSION_DEFLATE,
                header[Qcow2Descriptor.COMPRESSION_TYPE_OFFSET]);
        assertTrue(Files.size(img) < model.length * 3L / 4, "the clusters are not stored compressed");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 16, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(256 * 1024);
            for (int off = 0; off < model.length; off += 192 * 1024) {
                int len = Math.min(192 * 1024, model.length - off);
                assertEquals(len, rig.one(rig.read(off, b, len)));
                assertArrayEquals(Arrays.copyOfRange(model, off, off + len), DriverRig.bytes(b, len), "at " + off);
            }
            // A partial write into a compressed cluster: the rest of it comes from the decompressed data.
            byte[] patch = new byte[4096];
            new Random(1).nextBytes(patch);
            DriverRig.fill(b, patch, 0, patch.length);
            assertEquals(4096, rig.one(rig.write(3 * 65536 + 8192, b, 4096)));
            System.arraycopy(patch, 0, model, 3 * 65536 + 8192, 4096);
            assertEquals(65536, rig.one(rig.read(3 * 65536, b, 65536)));
            assertArrayEquals(Arrays.copyOfRange(model, 3 * 65536, 4 * 65536), DriverRig.bytes(b, 65536));
        }
        assertEquals(0, DriverRig.run("qemu-img", "check", img.toString()).code() & ~3); // leaks allowed: the old compressed cluster
        Path expected = dir.resolve("expected.raw");
        Files.write(expected, model);
        QemuTools.Run cmp = DriverRig.run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", expected.toString(), img.toString());
        assertEquals(0, cmp.code(), cmp.output());
    }

    @ParameterizedTest(name = "refcount_bits={0}")
    @ValueSource(ints = {1, 2, 4, 8, 16, 32, 64})
    void everyRefcountWidthStaysConsistent(int bits) throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", String.valueOf(64 * MIB), "-o", "refcount_bits=" + bits + ",cluster_size=4096");
        byte[] model = new byte[64 * MIB];
        Random rnd = new Random(bits);
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.LINUX_AIO, 16, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(65536);
            // Enough 4 KiB clusters to need more than one refcount block at the narrow widths.
            for (int i = 0; i < 600; i++) {
                int off = 4096 * rnd.nextInt(model.length / 4096 - 16);
                byte[] data = new byte[8192];
                rnd.nextBytes(data);
                DriverRig.fill(b, data, 0, data.length);
                assertEquals(8192, rig.one(rig.write(off, b, 8192)));
                System.arraycopy(data, 0, model, off, data.length);
            }
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), check.output());
        Path expected = dir.resolve("expected.raw");
        Files.write(expected, model);
        QemuTools.Run cmp = DriverRig.run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", expected.toString(), img.toString());
        assertEquals(0, cmp.code(), cmp.output());
    }

    /**
     * irev5: {@link Qcow2Driver#files()} lists the files the driver opened, the image and then its
     * backing chain (read-only), so that the daemon identifies them by descriptor.
     */
    @Test
    void filesListTheImageAndItsBackingChainAsOpened() throws Exception {
        Path base = dir.resolve("base.raw");
        randomRaw(base, 2 * MIB, 5);
        Path mid = DriverRig.create(dir, "mid.qcow2", String.valueOf(2 * MIB), "-b", "base.raw", "-F", "raw");
        Path top = DriverRig.create(dir, "top.qcow2", String.valueOf(2 * MIB), "-b", "mid.qcow2", "-F", "qcow2");
        try (Qcow2Driver d = Qcow2.open(top, BackendKind.THREADS, 16, Qcow2Options.defaults())) {
            java.util.List<io.vblk.aio.Image> files = d.files();
            assertEquals(3, files.size(), files.toString());
            assertEquals(top.toRealPath(), files.get(0).path());
            assertEquals(mid.toRealPath(), files.get(1).path());
            assertEquals(base.toRealPath(), files.get(2).path());
            assertTrue(!files.get(0).readOnly(), "the image is opened for writing");
            assertTrue(files.get(1).readOnly() && files.get(2).readOnly(), "backing files are opened read-only");
            for (io.vblk.aio.Image f : files) {
                assertTrue(f.fd() >= 0, "an open descriptor: " + f);
            }
        }
    }

    @Test
    void version2ImagesWriteZerosInsteadOfZeroFlags() throws Exception {
        Path base = dir.resolve("b.raw");
        byte[] model = randomRaw(base, 2 * MIB, 3);
        Path img = DriverRig.create(dir, "v2.qcow2", String.valueOf(2 * MIB), "-o", "compat=0.10", "-b", "b.raw", "-F", "raw");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.THREADS, 16, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            assertEquals(0, rig.one(rig.writeZeroes(65536, 3 * 65536)));
            assertEquals(0, rig.one(rig.discard(512 * 1024 + 512, 70000 - 70000 % 512)));
            Arrays.fill(model, 65536, 4 * 65536, (byte) 0);
            Arrays.fill(model, 512 * 1024 + 512, 512 * 1024 + 512 + 70000 - 70000 % 512, (byte) 0);
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), check.output());
        Path expected = dir.resolve("expected.raw");
        Files.write(expected, model);
        QemuTools.Run cmp = DriverRig.run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", expected.toString(), img.toString());
        assertEquals(0, cmp.code(), cmp.output());
    }

    @Test
    void metadataIsReadAgainAtTheFirstRequestAsAMigrationDestinationNeeds() throws Exception {
        Path img = DriverRig.create(dir, "m.qcow2", String.valueOf(4 * MIB));
        // A migration's destination holds the image beside the source: it runs without image locks.
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults()
                .locking(io.vblk.sys.ImageLock.Locking.OFF))) {
            // The source still writes after the destination opened: new clusters, a new L2 table.
            QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 1M 192k", img.toString());
            assertEquals(0, r.code(), r.output());
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(65536);
            assertEquals(65536, rig.one(rig.read(MIB + 65536, b, 65536)));
            byte[] want = new byte[65536];
            Arrays.fill(want, (byte) 0x3c);
            assertArrayEquals(want, DriverRig.bytes(b, 65536));
            // And allocation continues after the clusters the source added.
            DriverRig.fill(b, new byte[65536], 0, 0);
            assertEquals(8192, rig.one(rig.write(3 * MIB, b, 8192)));
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), check.output());
    }

    @Test
    void readOnlyOpenRefusesChangesAndLeavesTheFileAlone() throws Exception {
        Path img = DriverRig.create(dir, "ro.qcow2", String.valueOf(MIB));
        byte[] before = Files.readAllBytes(img);
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 4, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(-Errno.EROFS, rig.write(0, b, 4096));
            assertEquals(-Errno.EROFS, rig.discard(0, 4096));
            assertEquals(-Errno.EROFS, rig.writeZeroes(0, 4096));
            assertEquals(4096, rig.one(rig.read(0, b, 4096)));
            assertEquals(-Errno.EINVAL, rig.read(MIB, b, 4096));
        }
        assertArrayEquals(before, Files.readAllBytes(img));
    }
}
