package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * The bugs hostile images showed, each replayed exactly and checked for the driver's clean
 * answer: those {@link Qcow2HostileImagePropertyTest} found (its log of the case in the
 * javadoc), and those found reading the driver while writing it (said so).
 */
class Qcow2HostileImageRegressionTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private static void truncate(Path p, long size) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.truncate(size);
        }
    }

    static void putLong(Path p, long offset, long v) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).putLong(0, v), offset);
        }
    }

    static long getLong(Path p, long offset) throws IOException {
        try (FileChannel ch = FileChannel.open(p)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, offset);
            return b.getLong(0);
        }
    }

    private static IllegalArgumentException refused(Path p, boolean readOnly) {
        return assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(readOnly)).close());
    }

    /**
     * {@code v3-64k-rc64 ro seed 36: truncate to 187}: the file ends inside the feature-name
     * header extension, which the parser read on to the end of the cluster, past the buffer
     * holding the file: an IndexOutOfBoundsException out of the open (and out of
     * {@link Qcow2#virtualSize}). Now refused: the extension runs past the header.
     */
    @Test
    void fileEndingInsideAHeaderExtensionIsRefused() throws Exception {
        Path p = DriverRig.create(dir, "t.qcow2", String.valueOf(4 * MIB), "-o", "compat=1.1");
        truncate(p, 187);
        assertTrue(refused(p, true).getMessage().contains("extension"));
        assertThrows(IllegalArgumentException.class, () -> Qcow2.virtualSize(p));
    }

    /**
     * An L1 entry that names its L2 table 512 bytes into a cluster ({@code put64 L1[0] = T + 512},
     * the property's "misaligned" table value): the table then spans two clusters, and only the
     * first was known as metadata. Here the second is guest cluster 192's data (its first sector
     * zeros, so the 64 entries read from it say "unallocated"). A write to guest cluster 448
     * wrote its new L2 entry into that sector: guest cluster 192 changed under a write to
     * another. QEMU marks such an image corrupt ("L2 table offset unaligned"); vblk refuses it
     * at open, like a misaligned refcount block.
     */
    @Test
    void l2TableOffsetNotClusterAlignedIsRefusedOrHarmless() throws Exception {
        Path p = DriverRig.create(dir, "t.qcow2", String.valueOf(8 * MIB), "-o", "compat=0.10,cluster_size=4096");
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x11 1M 4k", "-c",
                "write -q -P 0 1M 512", p.toString());
        assertEquals(0, r.code(), r.output());
        long l1 = getLong(p, Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET);
        long table = getLong(p, l1) & Qcow2Descriptor.L1E_OFFSET_MASK;
        assertEquals(table + 4096, getLong(p, table + 256 * 8) & Qcow2Descriptor.L2E_OFFSET_MASK,
                "guest cluster 256's data follows its L2 table");
        putLong(p, l1, (table + 512) | Qcow2Descriptor.OFLAG_COPIED);
        Qcow2Driver d;
        try {
            d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults());
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().contains("L1 entry 0"), e.getMessage());
            return;
        }
        try (d) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            // Entry 192 of the misaligned table is entry 256 of the real one: guest 768 KiB reads 1 MiB's data.
            assertEquals(512, rig.one(rig.read(768 << 10, b, 512)));
            byte[] before = DriverRig.bytes(b, 512);
            DriverRig.fill(b, new byte[4096], 0, 4096);
            assertEquals(4096, rig.one(rig.write(1792 << 10, b, 4096)));
            assertEquals(512, rig.one(rig.read(768 << 10, b, 512)));
            assertArrayEquals(before, DriverRig.bytes(b, 512), "a write to guest cluster 448 changed guest cluster 192");
        }
    }

    /**
     * {@code convert-c rw seed -1150}, a clean image: a read of 64 allocated 4 KiB clusters takes
     * every slot of the back end (a piece each), and a FLUSH in the same batch was prepared
     * into the full back end and completed with EAGAIN: a guest's flush failed under load.
     */
    @Test
    void flushBehindALargeReadWaitsForASlot() throws Exception {
        Path p = busyImage();
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().l2CacheTables(2))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(256 << 10);
            assertEquals(512, rig.one(rig.read(0, b, 512))); // the L2 table in the cache: the read's pieces start at once
            long read = rig.read(0, b, 256 << 10);
            long flush = rig.flush();
            java.util.Map<Long, Long> results = rig.awaitAll();
            assertEquals(256 << 10, results.get(read));
            assertEquals(0, results.get(flush), "the flush failed");
        }
    }

    /**
     * The same for a write that allocates: the cluster reservation's refcount-block read met
     * the full back end and failed every write waiting for a cluster with EAGAIN.
     */
    @Test
    void allocatingWriteBehindALargeReadWaitsForASlot() throws Exception {
        Path p = busyImage();
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().l2CacheTables(2))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(256 << 10);
            NativeBuffer w = DriverRig.buffer(4096);
            assertEquals(512, rig.one(rig.read(0, b, 512)));
            long read = rig.read(0, b, 256 << 10);
            long write = rig.write(1 << 20, w, 4096);
            java.util.Map<Long, Long> results = rig.awaitAll();
            assertEquals(256 << 10, results.get(read));
            assertEquals(4096, results.get(write), "the allocating write failed");
        }
    }

    /** 4 KiB clusters, the first 256 KiB allocated: a 256 KiB read is 64 back-end reads. */
    private Path busyImage() throws Exception {
        Path p = DriverRig.create(dir, "busy.qcow2", String.valueOf(4 * MIB), "-o", "cluster_size=4096");
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x22 0 256k", p.toString());
        assertEquals(0, r.code(), r.output());
        return p;
    }

    /**
     * Found by reading {@code readCompressed}: a compressed descriptor's bytes may span three
     * clusters (up to two clusters long, starting anywhere), and only the first and the last
     * were checked against the metadata. Here the descriptor starts 5 bytes before the end of a
     * data cluster with a deflate stored block of one cluster, whose bytes are the next cluster:
     * an L2 table. The guest read that table as its data. Now every cluster of the range is
     * checked: the image is marked corrupt and the read fails.
     */
    @Test
    void compressedClusterSpanningMetadataIsRefused() throws Exception {
        Path p = DriverRig.create(dir, "t.qcow2", String.valueOf(4 * MIB), "-o", "cluster_size=4096");
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x11 0 4k", "-c",
                "write -q -P 0x22 2M 4k", p.toString());
        assertEquals(0, r.code(), r.output());
        long l1 = getLong(p, Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET);
        long table0 = getLong(p, l1) & Qcow2Descriptor.L1E_OFFSET_MASK;
        long data0 = getLong(p, table0) & Qcow2Descriptor.L2E_OFFSET_MASK;
        long table1 = getLong(p, l1 + 8) & Qcow2Descriptor.L1E_OFFSET_MASK;
        assertEquals(data0 + 4096, table1, "the second L2 table follows guest cluster 0's data");
        // BFINAL stored block: LEN 4096, NLEN ~4096, then 4096 literal bytes: the L2 table.
        long start = table1 - 5;
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(new byte[] {0x01, 0x00, 0x10, (byte) 0xff, (byte) 0xef}), start);
        }
        int x = 62 - (12 - 8);
        long sectors = 9; // (9 + 1) * 512 - (start % 512) bytes: ends inside the cluster after the table
        putLong(p, table0 + 8, Qcow2Descriptor.OFLAG_COMPRESSED | (sectors << x) | start);
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(-Errno.EIO, rig.one(rig.read(4096, b, 4096)), "guest cluster 1 read the L2 table");
            assertTrue(d.corruptReason().contains("compressed"), d.corruptReason());
        }
    }

    /**
     * Found by reading {@code readCompressed}: a read-only image cut short 100 bytes before its
     * end, a size that is no multiple of 512, its last compressed cluster ending in the last
     * partial block. The O_DIRECT read of that cluster was cut at the file's end (a length the
     * back end refuses) and the guest's read failed with EINVAL. Every read now answers with
     * its length or EIO: such an image is read through the page cache.
     */
    @Test
    void compressedClusterCutShortAtAnUnalignedSizeFailsWithEio() throws Exception {
        Path raw = dir.resolve("src.raw");
        byte[] data = new byte[MIB];
        new java.util.Random(3).nextBytes(data);
        for (int i = 0; i < data.length; i++) {
            data[i] = (byte) ('a' + (data[i] & 15)); // compressible, not trivially
        }
        java.nio.file.Files.write(raw, data);
        Path p = dir.resolve("c.qcow2");
        DriverRig.qemuImg("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", raw.toString(),
                p.toString());
        truncate(p, java.nio.file.Files.size(p) - 100);
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            for (long off = 0; off < MIB; off += 4096) {
                long rc = rig.one(rig.read(off, b, 4096));
                assertTrue(rc == 4096 || rc == -Errno.EIO, "read at " + off + " gave " + rc);
            }
        }
    }

    /** The same with the backing file name: the file ends inside it. */
    @Test
    void fileEndingInsideTheBackingNameIsRefused() throws Exception {
        DriverRig.create(dir, "base.qcow2", String.valueOf(MIB));
        Path p = DriverRig.create(dir, "t.qcow2", String.valueOf(MIB), "-b", "base.qcow2", "-F", "qcow2");
        long nameAt = getLong(p, Qcow2Descriptor.BACKING_FILE_OFFSET_OFFSET);
        truncate(p, nameAt + 3);
        assertTrue(refused(p, true).getMessage().contains("backing file name"));
    }
}
