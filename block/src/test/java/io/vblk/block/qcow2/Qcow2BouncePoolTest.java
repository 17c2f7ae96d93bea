package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * Copy-on-write and compressed reads need a bounce buffer of 3 clusters: with 2 MiB clusters a
 * buffer per request slot was 6 MiB, kept for the driver's life (774 MiB after 128 concurrent
 * reads of compressed clusters). The driver's bounce pool is bounded: the same burst keeps at
 * most {@link Qcow2Driver#BOUNCE_BUDGET_BYTES} (plus one buffer), every request completes (the
 * ones that found no buffer waited for one) with the right bytes, and so do 128 concurrent
 * copy-on-write writes into a compressed cluster.
 */
class Qcow2BouncePoolTest {
    private static final int CLUSTER = 2 << 20;

    @TempDir
    Path dir;

    private static long direct() {
        for (BufferPoolMXBean b : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)) {
            if (b.getName().equals("direct")) {
                return b.getMemoryUsed();
            }
        }
        return 0;
    }

    @Test
    void aBurstOfCompressedReadsAndCopyOnWritesKeepsBoundedMemory() throws Exception {
        Path src = DriverRig.create(dir, "src.qcow2", "4M", "-o", "cluster_size=2M");
        DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 4M", src.toString());
        Path img = dir.resolve("c2m.qcow2");
        DriverRig.qemuImg("convert", "-c", "-O", "qcow2", "-o", "cluster_size=2M", src.toString(), img.toString());
        int depth = 128;
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, depth, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer[] bufs = new NativeBuffer[depth];
            for (int i = 0; i < depth; i++) {
                bufs[i] = DriverRig.buffer(4096);
                DriverRig.poison(bufs[i]);
            }
            long before = direct();
            for (int i = 0; i < depth; i++) {
                rig.read((long) (i % 2) * CLUSTER + i * 4096L, bufs[i], 4096);
            }
            assertTrue(rig.awaitAll().values().stream().allMatch(v -> v == 4096), "every read completes");
            long grown = direct() - before;
            String what = depth + " reads of compressed 2 MiB clusters: direct memory grew by " + (grown >> 20)
                    + " MiB, " + d.bounceBuffers() + " bounce buffers";
            assertTrue(grown < Qcow2Driver.BOUNCE_BUDGET_BYTES + 8L * CLUSTER, what);
            assertTrue(d.bounceBuffers() * (3L * CLUSTER) <= Qcow2Driver.BOUNCE_BUDGET_BYTES, what);
            for (int i = 0; i < depth; i++) {
                byte[] got = DriverRig.bytes(bufs[i], 4096);
                assertEquals(0x33, got[0], "read " + i);
                assertEquals(0x33, got[4095], "read " + i);
            }
            // 128 copy-on-write writes, each 512 bytes into the compressed clusters (the first two to one cluster).
            NativeBuffer w = DriverRig.buffer(512);
            DriverRig.fill(w, filled(512, (byte) 0x44), 0, 512);
            for (int i = 0; i < depth; i++) {
                rig.write((long) (i % 2) * CLUSTER + i * 8192L, w, 512);
            }
            assertTrue(rig.awaitAll().values().stream().allMatch(v -> v == 512), "every write completes");
            for (int i = 0; i < depth; i++) {
                NativeBuffer b = bufs[i];
                assertEquals(4096, rig.one(rig.read((long) (i % 2) * CLUSTER + i * 8192L, b, 4096)));
                byte[] got = DriverRig.bytes(b, 4096);
                assertEquals(0x44, got[511], "write " + i);
                assertEquals(0x33, got[512], "write " + i);
            }
            assertTrue(d.bounceBuffers() * (3L * CLUSTER) <= Qcow2Driver.BOUNCE_BUDGET_BYTES, d.bounceBuffers() + " buffers");
        }
        QemuTools.Run check = QemuTools.qemuImg("check", img.toString());
        // 3: leaked clusters only (the compressed clusters copied away are not freed; the file only grows)
        assertTrue(check.code() == 0 || check.code() == 3 && !check.output().contains("ERROR"), check.output());
    }

    private static byte[] filled(int n, byte v) {
        byte[] b = new byte[n];
        java.util.Arrays.fill(b, v);
        return b;
    }
}
