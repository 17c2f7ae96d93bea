package io.vblk.block.qcow2;

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
 * A DISCARD of many whole clusters punched their host ranges one cluster at a time (one
 * fallocate each). Now the clusters whose host clusters follow each other are punched as one
 * run: 64 clusters written in order by qemu-io take one punch; 8 written in reverse order
 * (host clusters descending) take 8. Either way the space goes back, the image checks clean
 * and the neighbours' data is intact. Each cluster the image had at open has its refcount checked
 * before the punch, from one read of its refcount block for the whole request (a window of 1024
 * clusters; it was one read per cluster: 72 here); one the driver allocated itself needs none.
 */
class Qcow2DiscardRunTest {
    private static final int CLUSTER = 64 << 10;
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    @Test
    void adjacentHostClustersArePunchedInOneGo() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "16M", "-o", "compat=1.1,cluster_size=65536");
        qemuIo(img, "write -P 0x5a 0 4M");
        qemuIo(img, "write -P 0x66 4M 64k");
        for (int i = 7; i >= 0; i--) {
            qemuIo(img, "write -P 0x77 " + (8 * MIB + (long) i * CLUSTER) + " 64k"); // host clusters descending
        }
        long before = allocatedBytes(img);
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            assertEquals(0, rig.one(rig.discard(0, 4 * MIB)));
            assertEquals(1, d.punches(), "64 clusters adjacent in the guest and the host: one punch");
            assertEquals(0, rig.one(rig.discard(8 * MIB, 8 * CLUSTER)));
            assertEquals(1 + 8, d.punches(), "8 clusters whose host clusters descend: one punch each");
            assertEquals(1 + 1, d.refcountReads(), "one refcount read per DISCARD, not one per cluster (64 + 8)");
            // Clusters this driver allocated (past the file as opened) are its own: punched unread.
            NativeBuffer b = DriverRig.buffer(CLUSTER);
            b.buffer().setMemory(0, CLUSTER, (byte) 0x3c);
            for (long at = 12 * MIB; at < 13 * MIB; at += CLUSTER) {
                assertEquals(CLUSTER, rig.one(rig.write(at, b, CLUSTER)));
            }
            assertEquals(0, rig.one(rig.discard(12 * MIB, MIB)));
            assertEquals(1 + 8 + 1, d.punches(), "16 clusters allocated in order: one punch");
            assertEquals(1 + 1, d.refcountReads(), "no refcount read for the driver's own clusters");
            assertEquals(0, rig.one(rig.flush()));
        }
        long after = allocatedBytes(img);
        assertTrue(before - after >= 4 * MIB + 8 * CLUSTER - CLUSTER,
                "the discarded clusters' space was not given back: " + before + " -> " + after + " bytes");
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0 0 4M");
        qemuIo(img, "read -P 0x66 4M 64k");
        qemuIo(img, "read -P 0 8M 512k");
        qemuIo(img, "read -P 0 12M 1M");
    }

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
