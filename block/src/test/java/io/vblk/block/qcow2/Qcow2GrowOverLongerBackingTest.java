package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * An online grow of an overlay whose backing file is longer than the overlay (rev17b H1): the new
 * area reads zeros, as after QEMU's {@code qemu-img resize} (bdrv_co_truncate's zero write), not
 * the backing file's bytes there. Before the fix the grown area showed the backing data (0x42).
 * A v3 image gets ZERO entries; the partial cluster at the old end is copied on write with its
 * tail zeroed; a v2 image (no zero flag) is refused. A shrink then a grow over the backing is the
 * same case. Each image is then read by qemu-io and checked by qemu-img check.
 */
class Qcow2GrowOverLongerBackingTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private Path base(int bytes) throws Exception {
        Path base = dir.resolve("base.raw");
        byte[] b = new byte[bytes];
        Arrays.fill(b, (byte) 0x42);
        Files.write(base, b);
        return base;
    }

    private Path overlay(String name, long size, String compat) {
        Path img = dir.resolve(name);
        DriverRig.qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=" + compat + ",cluster_size=65536",
                "-b", "base.raw", "-F", "raw", img.toString(), Long.toString(size));
        return img;
    }

    /** Reads [from, to) in 64 KiB steps and checks every byte: 0x42 below {@code dataEnd}, zero from it. */
    private static void expect(DriverRig rig, long from, long to, long dataEnd) {
        NativeBuffer buf = DriverRig.buffer(65536);
        for (long off = from; off < to; off += 65536) {
            int len = (int) Math.min(65536, to - off);
            DriverRig.poison(buf);
            assertEquals(len, rig.one(rig.read(off, buf, len)), "read at " + off);
            for (int i = 0; i < len; i += 512) {
                int want = off + i < dataEnd ? 0x42 : 0;
                assertEquals(want, buf.buffer().getByte(i) & 0xff, "byte at " + (off + i));
                assertEquals(want, buf.buffer().getByte(i + 511) & 0xff, "byte at " + (off + i + 511));
            }
        }
    }

    private static void qemuAgrees(Path img, long dataEnd, long size) {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "read -P 0x42 0 " + dataEnd,
                "-c", "read -P 0 " + dataEnd + " " + (size - dataEnd), img.toString());
        assertEquals(0, r.code(), r.output());
        assertFalse(r.output().contains("verification failed"), r.output());
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
    }

    private void grow(String compat, long oldSize) throws Exception {
        grow(compat, oldSize, 4L * MIB);
    }

    private void grow(String compat, long oldSize, long newSize) throws Exception {
        base(4 * MIB);
        Path img = overlay("o.qcow2", oldSize, compat);
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            expect(rig, 0, oldSize, oldSize);
            d.resize(newSize);
            assertEquals(newSize, d.sizeBytes());
            expect(rig, 0, newSize, oldSize);
        }
        qemuAgrees(img, oldSize, newSize);
    }

    @Test
    void growV3ReadsZerosPastTheOldEnd() throws Exception {
        grow("1.1", MIB);
    }

    /** The old end inside a cluster: its head keeps the backing bytes, its tail reads zeros. */
    @Test
    void growV3FromAnUnalignedEndZeroesTheTailOfItsCluster() throws Exception {
        grow("1.1", MIB + 512);
    }

    /**
     * The new size inside a cluster (the harness's seed 22): the cluster's head, below the new
     * end, reads zeros too; it used to keep the backing file's bytes.
     */
    @Test
    void growV3ToAnUnalignedEndZeroesTheHeadOfItsCluster() throws Exception {
        grow("1.1", MIB, 2L * MIB + 512);
    }

    /** Version 2 has no zero clusters: refused, the disk unchanged, the way out named. */
    @Test
    void growV2IsRefused() throws Exception {
        base(4 * MIB);
        Path img = overlay("o.qcow2", MIB, "0.10");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            java.io.IOException e = assertThrows(java.io.IOException.class, () -> d.resize(4L * MIB));
            assertTrue(e.getMessage().contains("qemu-img resize"), e.getMessage());
            assertEquals(MIB, d.sizeBytes());
            expect(rig, 0, MIB, MIB);
        }
        qemuAgrees(img, MIB, MIB);
    }

    /**
     * A larger grow with 4 KiB clusters (an L2 table covers 2 MiB): new L2 tables for the zero
     * entries, and past the backing file's end plain growth.
     */
    @Test
    void growPastTheBackingFileEnd() throws Exception {
        base(12 * MIB);
        Path img = dir.resolve("o.qcow2");
        DriverRig.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw",
                img.toString(), Long.toString(MIB));
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            d.resize(64L * MIB);
            expect(rig, 0, 16L * MIB, MIB);
        }
        qemuAgrees(img, MIB, 64L * MIB);
    }

    /** Shrunk (allow_shrink), then grown again over the backing file: zeros too. */
    @Test
    void shrinkThenGrowReadsZeros() throws Exception {
        base(4 * MIB);
        Path img = overlay("o.qcow2", 4L * MIB, "1.1");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            expect(rig, 0, 4L * MIB, 4L * MIB);
            d.resize(MIB);
            d.resize(4L * MIB);
            expect(rig, 0, 4L * MIB, MIB);
        }
        qemuAgrees(img, MIB, 4L * MIB);
    }
}
