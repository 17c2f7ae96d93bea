package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.L2E_OFFSET_MASK;
import static io.vblk.block.qcow2.Qcow2Descriptor.OFLAG_COPIED;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.testkit.QemuTools;

/**
 * A DISCARD of a whole cluster of a v3 image punched the host cluster its L2 entry names
 * whenever the entry carried COPIED ("ours alone"). A corrupt image can say COPIED over a
 * shared cluster: the punch then zeroed the other user's data. Here guest cluster 1's entry is
 * edited to name guest cluster 0's host cluster with COPIED and that cluster's refcount is 2;
 * now the driver reads the refcount before punching, finds 2, marks the image corrupt and fails
 * the DISCARD, and guest cluster 0's bytes are intact in the file.
 */
class Qcow2DiscardSharedClusterTest {
    private static final int CLUSTER = 64 << 10;

    @TempDir
    Path dir;

    @Test
    void aCopiedEntryOverASharedClusterIsNeverPunched() throws Exception {
        Path img = DriverRig.create(dir, "s.qcow2", "4M", "-o", "compat=1.1,cluster_size=65536");
        DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 64k 64k",
                img.toString());
        ImageLayout layout = new ImageLayout(Files.readAllBytes(img));
        long l2 = layout.l2Tables.get(0);
        long hostA = layout.i64(l2) & L2E_OFFSET_MASK;
        long refBlock = layout.refBlocks.get(0);
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).putLong(0, hostA | OFLAG_COPIED), l2 + 8); // cluster 1 -> A, COPIED
            ch.write(ByteBuffer.allocate(2).putShort(0, (short) 2), refBlock + 2 * (hostA / CLUSTER)); // A: refcount 2
        }
        long rc;
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            rc = rig.one(rig.discard(CLUSTER, CLUSTER));
        }
        byte[] a = new byte[CLUSTER];
        try (FileChannel ch = FileChannel.open(img)) {
            ch.read(ByteBuffer.wrap(a), hostA);
        }
        byte[] want = new byte[CLUSTER];
        Arrays.fill(want, (byte) 0x11);
        assertArrayEquals(want, a, "guest cluster 0's data, in the shared host cluster, was punched");
        assertEquals(-Errno.EIO, rc, "a DISCARD of a COPIED entry over a cluster of refcount 2");
        QemuTools.Run info = DriverRig.run("qemu-img", "info", img.toString());
        assertTrue(info.output().contains("corrupt: true"), "the image is not marked corrupt: " + info.output());
    }
}
