package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * qcow2 files are untrusted input: each test damages one field of an image qemu-img made and
 * checks that vblk refuses it at open with a message naming the problem, or marks it corrupt and
 * fails requests with EIO. Nothing may crash, hang, or touch bytes outside the file.
 */
class Qcow2HostileImageTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private Path image(String... options) throws Exception {
        Path p = DriverRig.create(dir, "h.qcow2", String.valueOf(8 * MIB), options);
        // A few clusters of data so there is an L2 table to damage.
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 256k", p.toString());
        assertEquals(0, r.code(), r.output());
        return p;
    }

    private static void put(Path p, long offset, ByteBuffer value) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(value.flip(), offset);
        }
    }

    private static void putLong(Path p, long offset, long v) throws IOException {
        put(p, offset, ByteBuffer.allocate(8).putLong(v));
    }

    private static void putInt(Path p, long offset, int v) throws IOException {
        put(p, offset, ByteBuffer.allocate(4).putInt(v));
    }

    private static long getLong(Path p, long offset) throws IOException {
        try (FileChannel ch = FileChannel.open(p)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, offset);
            return b.flip().getLong();
        }
    }

    private static long l1Offset(Path p) throws IOException {
        return getLong(p, 40);
    }

    private static long l2Offset(Path p) throws IOException {
        return getLong(p, l1Offset(p)) & Qcow2Descriptor.L1E_OFFSET_MASK;
    }

    private String refused(Path p) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults()).close());
        assertNotNull(e.getMessage());
        return e.getMessage();
    }

    @Test
    void badMagicIsRefused() throws Exception {
        Path p = image();
        putInt(p, 0, 0x12345678);
        assertTrue(refused(p).contains("magic"));
    }

    @Test
    void unknownVersionIsRefused() throws Exception {
        Path p = image();
        putInt(p, 4, 4);
        assertTrue(refused(p).contains("version"));
    }

    @Test
    void absurdClusterBitsAreRefused() throws Exception {
        Path p = image();
        putInt(p, 20, 31);
        assertTrue(refused(p).contains("cluster_bits"));
    }

    @Test
    void absurdSizeIsRefused() throws Exception {
        Path p = image();
        putLong(p, 24, 1L << 62);
        assertTrue(refused(p).contains("size"));
    }

    @Test
    void l1TooSmallForTheDiskIsRefused() throws Exception {
        Path p = image();
        putLong(p, 24, 1L << 40); // 1 TiB needs more than the one L1 entry an 8 MiB disk has
        assertTrue(refused(p).contains("l1_size"));
    }

    @Test
    void l1TablePastTheEndIsRefused() throws Exception {
        Path p = image();
        putLong(p, 40, 1L << 40);
        assertTrue(refused(p).contains("L1 table"));
    }

    @Test
    void l1EntryPastTheEndIsRefused() throws Exception {
        Path p = image();
        putLong(p, l1Offset(p), (1L << 40) | Qcow2Descriptor.OFLAG_COPIED);
        assertTrue(refused(p).contains("L1 entry"));
    }

    @Test
    void l2TableOverlappingTheRefcountTableIsRefused() throws Exception {
        Path p = image();
        long reftable = getLong(p, 48);
        putLong(p, l1Offset(p), reftable | Qcow2Descriptor.OFLAG_COPIED);
        assertTrue(refused(p).contains("overlap"));
    }

    @Test
    void unknownIncompatibleFeatureIsRefused() throws Exception {
        Path p = image();
        putLong(p, 72, 1L << 10);
        assertTrue(refused(p).contains("unknown incompatible"));
    }

    @Test
    void externalDataFileAndExtendedL2AreRefused() throws Exception {
        Path p = image();
        putLong(p, 72, Qcow2Descriptor.INCOMPAT_EXTERNAL_DATA);
        assertTrue(refused(p).contains("external data"));
        putLong(p, 72, Qcow2Descriptor.INCOMPAT_EXTENDED_L2);
        assertTrue(refused(p).contains("extended L2"));
    }

    /** A zstd image (compression_type = 1) whose first cluster qemu-img stored compressed; returns its L2 entry. */
    private long zstdImage(Path p, byte[] cluster0) throws Exception {
        Path raw = dir.resolve("z.raw");
        byte[] data = new byte[8 * MIB];
        System.arraycopy(cluster0, 0, data, 0, cluster0.length);
        Files.write(raw, data);
        DriverRig.qemuImg("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd",
                raw.toString(), p.toString());
        long e = getLong(p, l2Offset(p));
        assertTrue((e & Qcow2Descriptor.OFLAG_COMPRESSED) != 0, "cluster 0 is not stored compressed");
        return e;
    }

    /** 64 KiB clusters: the compressed descriptor's host offset is bits 0..53, its sector count bits 54..61. */
    private static final int ZSTD_X = 62 - (16 - 8);

    @Test
    void damagedZstdFrameFailsWithEio() throws Exception {
        Path p = dir.resolve("z.qcow2");
        byte[] c0 = new byte[65536];
        java.util.Arrays.fill(c0, (byte) 0x11);
        long e = zstdImage(p, c0);
        // No zstd frame magic where the cluster starts: zstd reports an error, the request gets EIO.
        putInt(p, e & ((1L << ZSTD_X) - 1), 0x0badf00d);
        assertCorruptOnRead(p, false);
    }

    @Test
    void truncatedZstdFrameFailsWithEio() throws Exception {
        Path p = dir.resolve("z.qcow2");
        // 2 KiB of noise repeated: a frame of a few KiB, longer than one sector.
        byte[] noise = new byte[2048];
        new Random(5).nextBytes(noise);
        byte[] c0 = new byte[65536];
        for (int i = 0; i < c0.length; i += noise.length) {
            System.arraycopy(noise, 0, c0, i, noise.length);
        }
        long e = zstdImage(p, c0);
        assertTrue(((e >>> ZSTD_X) & 0xff) > 0, "the frame fits in one sector");
        // The sector count now says the frame ends within its first sector: the input runs out mid-frame.
        putLong(p, l2Offset(p), e & ~(0xffL << ZSTD_X));
        assertCorruptOnRead(p, false);
    }

    @Test
    void dirtyOrCorruptImagesAreNotOpenedForWriting() throws Exception {
        Path p = image();
        putLong(p, 72, Qcow2Descriptor.INCOMPAT_DIRTY);
        assertTrue(refused(p).contains("dirty"));
        putLong(p, 72, Qcow2Descriptor.INCOMPAT_CORRUPT);
        assertTrue(refused(p).contains("corrupt"));
        Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true)).close();
    }

    @Test
    void backingLoopIsRefused() throws Exception {
        Path a = DriverRig.create(dir, "a.qcow2", String.valueOf(MIB));
        Path b = DriverRig.create(dir, "b.qcow2", String.valueOf(MIB), "-b", "a.qcow2", "-F", "qcow2");
        DriverRig.qemuImg("rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", a.toString());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(b, BackendKind.THREADS, 8, Qcow2Options.defaults()).close());
        assertTrue(e.getMessage().contains("loop"), e.getMessage());
    }

    @Test
    void tooDeepAChainIsRefused() throws Exception {
        Path prev = DriverRig.create(dir, "c0.qcow2", String.valueOf(MIB));
        for (int i = 1; i <= 4; i++) {
            prev = DriverRig.create(dir, "c" + i + ".qcow2", String.valueOf(MIB), "-b", prev.getFileName().toString(),
                    "-F", "qcow2");
        }
        Path top = prev;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(top, BackendKind.THREADS, 8, Qcow2Options.defaults().maxBackingDepth(3)).close());
        assertTrue(e.getMessage().contains("deeper"), e.getMessage());
        Qcow2.open(top, BackendKind.THREADS, 8, Qcow2Options.defaults().maxBackingDepth(4)).close();
    }

    @Test
    void backingWithoutARecordedFormatIsRefused() throws Exception {
        Files.write(dir.resolve("base.raw"), new byte[MIB]);
        Path p = DriverRig.create(dir, "o.qcow2", String.valueOf(MIB), "-b", "base.raw", "-F", "raw");
        // Drop the backing-format extension: its type word becomes "end of extensions".
        long ext = 112;
        assertEquals(Qcow2Descriptor.EXT_BACKING_FORMAT, (int) (getLong(p, ext) >>> 32));
        putInt(p, ext, 0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.THREADS, 8, Qcow2Options.defaults()).close());
        assertTrue(e.getMessage().contains("never guesses"), e.getMessage());
    }

    @Test
    void l2EntryIntoMetadataMarksTheImageCorrupt() throws Exception {
        Path p = image();
        putLong(p, l2Offset(p), l1Offset(p) | Qcow2Descriptor.OFLAG_COPIED);
        assertCorruptOnRead(p, true);
    }

    @Test
    void l2EntryPastTheEndMarksTheImageCorrupt() throws Exception {
        Path p = image();
        putLong(p, l2Offset(p), (1L << 40) | Qcow2Descriptor.OFLAG_COPIED);
        assertCorruptOnRead(p, true);
    }

    @Test
    void l2EntryWithReservedBitsMarksTheImageCorrupt() throws Exception {
        Path p = image();
        long e = getLong(p, l2Offset(p));
        putLong(p, l2Offset(p), e | 0x2);
        assertCorruptOnRead(p, true);
    }

    @Test
    void compressedDescriptorPastTheEndFailsWithEio() throws Exception {
        Path p = image();
        putLong(p, l2Offset(p), Qcow2Descriptor.OFLAG_COMPRESSED | (1L << 39));
        assertCorruptOnRead(p, false);
    }

    private void assertCorruptOnRead(Path p, boolean atLoad) throws Exception {
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(65536);
            assertEquals(-Errno.EIO, rig.one(rig.read(0, b, 4096)));
            assertNotNull(d.corruptReason());
            // Every later request fails, writes included: nothing more reaches the file.
            assertEquals(-Errno.EIO, rig.one(rig.write(4 * MIB, b, 4096)));
        }
        // The corrupt bit is now set in the header: QEMU refuses to write it too.
        assertTrue((getLong(p, 72) & Qcow2Descriptor.INCOMPAT_CORRUPT) != 0);
    }

    @Test
    void randomDamageNeverCrashesOrEscapesTheFile() throws Exception {
        Random rnd = new Random(42);
        Path clean = image();
        byte[] original = Files.readAllBytes(clean);
        for (int round = 0; round < 60; round++) {
            Path p = dir.resolve("fuzz.qcow2");
            byte[] damaged = original.clone();
            int flips = 1 + rnd.nextInt(8);
            for (int i = 0; i < flips; i++) {
                // Mostly the metadata: the header, the L1 and refcount tables and the L2 table.
                int where = rnd.nextInt(4) == 0 ? rnd.nextInt(damaged.length) : rnd.nextInt(Math.min(damaged.length, 5 * 65536));
                damaged[where] ^= (byte) (1 << rnd.nextInt(8));
            }
            Files.write(p, damaged);
            Qcow2Driver d;
            try {
                d = Qcow2.open(p, BackendKind.THREADS, 8, Qcow2Options.defaults().l2CacheTables(2));
            } catch (IllegalArgumentException | java.io.UncheckedIOException e) {
                continue; // refused at open, with a message
            }
            try (d) {
                DriverRig rig = new DriverRig(d);
                NativeBuffer b = DriverRig.buffer(65536);
                for (long off = 0; off < d.sizeBytes(); off += 1 << 20) {
                    long r = rig.one(rig.read(off, b, 65536));
                    assertTrue(r == 65536 || r == -Errno.EIO || r == -Errno.EINVAL, "read " + r);
                    long w = rig.one(rig.write(off + 4096, b, 8192));
                    assertTrue(w == 8192 || w == -Errno.EIO || w == -Errno.EINVAL || w == -Errno.ENOSPC, "write " + w);
                }
            }
            assertTrue(Files.size(p) <= Math.max(damaged.length, 64L << 20), "file grew absurdly");
        }
    }
}
