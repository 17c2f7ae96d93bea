package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A whole-cluster DISCARD of a v3 image wrote a ZERO entry and kept the host cluster allocated
 * in the file: fstrim in the guest returned no space. Now the kept cluster's host range is
 * punched once the entry is written (its refcount stays 1, its entry ZERO|COPIED, so nothing
 * ever names a freed cluster and {@code qemu-img check} stays clean), and a later write reuses
 * the cluster in place.
 */
class Qcow2DiscardPunchTest {
    private static final int CLUSTER = 64 << 10;
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    @Test
    void aWholeClusterDiscardGivesTheHostClusterBack() throws Exception {
        Path img = DriverRig.create(dir, "d.qcow2", "16M", "-o", "compat=1.1,cluster_size=65536");
        NativeBuffer buf = DriverRig.buffer(CLUSTER);
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            buf.buffer().setMemory(0, CLUSTER, (byte) 0x5a);
            for (long at = 0; at < 4 * MIB; at += CLUSTER) {
                assertEquals(CLUSTER, rig.one(rig.write(at, buf, CLUSTER)));
            }
            assertEquals(0, rig.one(rig.flush()));
        }
        long before = allocatedBytes(img);
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            // 4 MiB from half a cluster in: clusters 1 to 62 whole, 0 and 63 in part (left as they are).
            assertEquals(0, rig.one(rig.discard(CLUSTER / 2, 4 * MIB - CLUSTER)));
            assertEquals(0, rig.one(rig.flush()));
            long after = allocatedBytes(img);
            System.out.println("Qcow2DiscardPunchTest: allocated " + before + " bytes before the discard, " + after
                    + " after");
            assertTrue(before - after >= 4 * MIB - 3L * CLUSTER,
                    "the discarded clusters' space was not given back: " + before + " -> " + after + " bytes");
            NativeBuffer r = DriverRig.buffer(CLUSTER);
            assertEquals(CLUSTER, rig.one(rig.read(MIB, r, CLUSTER)));
            assertArrayEquals(new byte[CLUSTER], DriverRig.bytes(r, CLUSTER), "a discarded cluster reads as zeros");
            buf.buffer().setMemory(0, CLUSTER, (byte) 0x77);
            assertEquals(4096, rig.one(rig.write(MIB + 8192, buf, 4096)), "a write reusing a discarded cluster");
            assertEquals(0, rig.one(rig.flush()));
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0x5a 0 64k");        // half discarded: left as it was
        qemuIo(img, "read -P 0 64k 960k");
        qemuIo(img, "read -P 0 1M 8k");
        qemuIo(img, "read -P 0x77 1056768 4k");   // the write into the reused cluster
        qemuIo(img, "read -P 0 1060864 52k");
        qemuIo(img, "read -P 0 1088k 2944k");
        qemuIo(img, "read -P 0x5a 4032k 64k");    // half discarded: left as it was
    }

    /** The bytes the file system holds for {@code p} (stat's blocks, 512 bytes each). */
    private static long allocatedBytes(Path p) {
        QemuTools.Run r = DriverRig.run("stat", "-c", "%b", p.toString());
        assertEquals(0, r.code(), r.output());
        return Long.parseLong(r.output().trim()) * 512;
    }

    private static void qemuIo(Path img, String command) {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", command, img.toString());
        assertEquals(0, r.code(), "qemu-io " + command + ": " + r.output());
        assertFalse(r.output().contains("Pattern verification failed"), "qemu-io " + command + ": " + r.output());
    }
}
