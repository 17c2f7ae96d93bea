package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * An image whose refcount table cannot cover the file its disk may grow to (rev17b M2: qemu-img
 * makes a one-cluster table, and QEMU grows it on need: 512-byte clusters with 64-bit refcounts
 * cover 2 MiB of file). Before the fix a write failed with ENOSPC once the file passed it.
 */
class Qcow2RefcountTableGrowthTest {
    @TempDir
    Path dir;

    @Test
    void smallClustersWriteTheWholeDisk() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "8M", "-o", "cluster_size=512,refcount_bits=64");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(65536);
            b.buffer().setMemory(0, 65536, (byte) 9);
            for (long off = 0; off < (8 << 20); off += 65536) {
                assertEquals(65536, rig.one(rig.write(off, b, 65536)), "write at " + off);
            }
            assertEquals(0, rig.one(rig.flush()));
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "read -P 9 0 8M", img.toString());
        assertFalse(r.output().contains("verification failed"), r.output());
    }
}
