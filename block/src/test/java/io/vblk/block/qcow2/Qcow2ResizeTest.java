package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * Online resize of qcow2 images (BlockDriver.resize): growth within the L1 table's clusters and
 * with a relocated, larger L1 table, with requests in flight; I/O past the old end; then
 * {@code qemu-img check} and {@code qemu-img info} of the result. Shrinking drops an unallocated
 * tail only.
 */
class Qcow2ResizeTest {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    private static void qemuIo(Path img, String command) throws Exception {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", command, img.toString());
        assertEquals(0, r.code(), "qemu-io " + command + ": " + r.output());
        assertFalse(r.output().contains("Pattern verification failed"), "qemu-io " + command + ": " + r.output());
    }

    private static void checkClean(Path img, long virtualSize) throws Exception {
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        QemuTools.Run info = DriverRig.run("qemu-img", "info", "--output=json", img.toString());
        assertTrue(info.output().contains("\"virtual-size\": " + virtualSize), info.output());
    }

    private static void fill(NativeBuffer b, int len, int value) {
        b.buffer().setMemory(0, len, (byte) value);
    }

    private static void expect(NativeBuffer b, int len, int value) {
        for (int i = 0; i < len; i++) {
            assertEquals(value, b.buffer().getByte(i) & 0xff, "byte " + i);
        }
    }

    @Test
    void growsWithinTheL1TableWithRequestsInFlightAndServesThePastTheOldEnd() throws Exception {
        Path img = DriverRig.create(dir, "g.qcow2", "64M");
        qemuIo(img, "write -P 0x5a 60M 1M");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 32, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer a = DriverRig.buffer((int) MIB);
            NativeBuffer b = DriverRig.buffer((int) MIB);
            fill(a, (int) MIB, 0x11);
            assertTrue(rig.write(2 * MIB, a, (int) MIB) > 0);
            assertTrue(rig.write(62 * MIB, a, (int) MIB) > 0);
            d.submit();
            // Still in flight: the resize lets them finish first; their completions come next.
            assertEquals(-Errno.EINVAL, d.read(100 * MIB, vector(b, 4096), 999));
            d.resize(256 * MIB);
            assertEquals(256 * MIB, d.sizeBytes());
            Map<Long, Long> results = rig.awaitAll();
            assertEquals(2, results.size());
            results.values().forEach(r -> assertEquals(MIB, r));
            fill(a, (int) MIB, 0x22);
            assertEquals(MIB, rig.one(rig.write(200 * MIB, a, (int) MIB)));
            assertEquals(MIB, rig.one(rig.write(256 * MIB - MIB, a, (int) MIB)));
            assertEquals(MIB, rig.one(rig.read(200 * MIB, b, (int) MIB)));
            expect(b, (int) MIB, 0x22);
            assertEquals(MIB, rig.one(rig.read(60 * MIB, b, (int) MIB)));
            expect(b, (int) MIB, 0x5a);
            assertEquals(MIB, rig.one(rig.read(100 * MIB, b, (int) MIB)));
            expect(b, (int) MIB, 0);
        }
        checkClean(img, 256 * MIB);
        qemuIo(img, "read -P 0x11 2M 1M");
        qemuIo(img, "read -P 0x11 62M 1M");
        qemuIo(img, "read -P 0x5a 60M 1M");
        qemuIo(img, "read -P 0x22 200M 1M");
        qemuIo(img, "read -P 0x22 255M 1M");
        qemuIo(img, "read -P 0 100M 1M");
    }

    /** 4 KiB clusters: one L1 cluster covers 1 GiB, so growing to 3 GiB moves the L1 table. */
    @Test
    void growsPastTheL1TablesClustersByMovingTheTable() throws Exception {
        Path img = DriverRig.create(dir, "m.qcow2", "16M", "-o", "cluster_size=4096");
        qemuIo(img, "write -P 0x6b 1M 64k");
        long oldL1;
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.THREADS, 16, Qcow2Options.defaults())) {
            oldL1 = d.l1TableOffset();
            d.resize(3L << 30);
            assertTrue(d.l1TableOffset() != oldL1, "the L1 table moved");
            DriverRig rig = new DriverRig(d);
            NativeBuffer a = DriverRig.buffer(65536);
            fill(a, 65536, 0x7c);
            assertEquals(65536, rig.one(rig.write((3L << 30) - 65536, a, 65536)));
            assertEquals(65536, rig.one(rig.write(1536 * MIB, a, 65536)));
            assertEquals(65536, rig.one(rig.read(MIB, a, 65536)));
            expect(a, 65536, 0x6b);
        }
        checkClean(img, 3L << 30);
        qemuIo(img, "read -P 0x6b 1M 64k");
        qemuIo(img, "read -P 0x7c 1536M 64k");
        qemuIo(img, "read -P 0x7c " + ((3L << 30) - 65536) + " 64k");
    }

    @Test
    void shrinkDropsOnlyAnUnallocatedTail() throws Exception {
        Path img = DriverRig.create(dir, "s.qcow2", "2G");
        qemuIo(img, "write -P 0x33 1000M 64k");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            IOException refused = assertThrows(IOException.class, () -> d.resize(512 * MIB));
            assertTrue(refused.getMessage().contains("qemu-img resize --shrink"), refused.getMessage());
            assertEquals(2048 * MIB, d.sizeBytes());
            d.resize(1024 * MIB); // nothing allocated in [1 GiB, 2 GiB)
            assertEquals(1024 * MIB, d.sizeBytes());
            DriverRig rig = new DriverRig(d);
            NativeBuffer a = DriverRig.buffer(65536);
            assertEquals(-Errno.EINVAL, rig.read(1500 * MIB, a, 4096));
            assertEquals(65536, rig.one(rig.read(1000 * MIB, a, 65536)));
            expect(a, 65536, 0x33);
        }
        checkClean(img, 1024 * MIB);
    }

    @Test
    void aReadOnlyImageRefusesAResize() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "64M");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            assertThrows(IOException.class, () -> d.resize(128 * MIB));
            assertEquals(64 * MIB, d.sizeBytes());
        }
        assertEquals(64 * MIB, Qcow2.virtualSize(img));
        assertTrue(Files.size(img) > 0);
    }

    private static io.vblk.aio.IoVector vector(NativeBuffer b, int len) {
        io.vblk.aio.IoVector v = new io.vblk.aio.IoVector(1);
        v.add(b.address(), len);
        return v;
    }
}
