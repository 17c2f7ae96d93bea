package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * rev15a: a zstd frame in a hostile image declares a 128 MiB window (windowLog 27, zstd's default
 * decoder limit) for a 64 KiB cluster. The driver's streaming context then mallocs a ~128 MiB
 * ring buffer and keeps it for the driver's life: one per chain level, 17 levels 2.1 GiB of
 * address space (committed memory under vm.overcommit_memory=2) from one image. No frame QEMU
 * writes needs a window over the cluster (it compresses one cluster with ZSTD_e_end, so the
 * window is sized to the cluster): the context must refuse it (setLongMax(clusterBits)) and the
 * read fail with EIO. Fails today: the read succeeds and VmSize grows by ~128 MiB.
 */
class Qcow2ZstdWindowTest {
    private static final int MIB = 1 << 20;
    private static final int X = 62 - (16 - 8);

    @TempDir
    Path dir;

    private static long vmSizeKiB() throws Exception {
        for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (l.startsWith("VmSize")) {
                return Long.parseLong(l.replaceAll("\\D", ""));
            }
        }
        return -1;
    }

    @Test
    void aZstdFrameAskingForAWindowLargerThanTheClusterIsRefused() throws Exception {
        Path raw = dir.resolve("z.raw");
        byte[] data = new byte[8 * MIB];
        java.util.Arrays.fill(data, 0, 65536, (byte) 0x11);
        Files.write(raw, data);
        Path p = dir.resolve("z.qcow2");
        DriverRig.qemuImg("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd",
                raw.toString(), p.toString());
        long e;
        long hostOff;
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, 40);
            long l1 = b.flip().getLong();
            ch.read(b.clear(), l1);
            long l2 = b.flip().getLong() & Qcow2Descriptor.L1E_OFFSET_MASK;
            ch.read(b.clear(), l2);
            e = b.flip().getLong();
            assertTrue((e & Qcow2Descriptor.OFLAG_COMPRESSED) != 0);
            hostOff = e & ((1L << X) - 1);
            // magic, FHD 0 (no content size, not single-segment), window descriptor 17<<3 (2^27 bytes),
            // one last RLE block of 65536 bytes of 0x11: a valid frame of 10 bytes that gives the cluster.
            int bh = (65536 << 3) | (1 << 1) | 1;
            ByteBuffer f = ByteBuffer.wrap(new byte[] {0x28, (byte) 0xb5, 0x2f, (byte) 0xfd, 0x00, (byte) (17 << 3),
                    (byte) bh, (byte) (bh >>> 8), (byte) (bh >>> 16), 0x11});
            ch.write(f, hostOff);
        }
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.THREADS, 8, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(65536);
            // After the open: its threads' first mallocs (a glibc arena each) are not the read's.
            long before = vmSizeKiB();
            long r = rig.one(rig.read(0, buf, 65536));
            long grown = vmSizeKiB() - before;
            assertEquals(-Errno.EIO, r, "a frame that needs a 128 MiB window for a 64 KiB cluster is accepted");
            assertNotNull(d.corruptReason());
            assertTrue(grown < 96 * 1024, "one compressed read grew the address space by " + grown + " KiB");
        }
    }
}
