package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.ImageLock;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A live migration's hand-over of a qcow2 image between two drivers of one file (two open file
 * descriptions conflict on QEMU's locks as two processes do), as QEMU's BDRV_O_INACTIVE does
 * it: the incoming driver opens inactive and writes nothing; the source hands over (reserved
 * clusters returned, durable, writer's locks dropped) and writes nothing after, not even at its
 * close; the destination's activation takes the writer's locks and reads all metadata again,
 * so it sees clusters and L2 tables the source allocated after it opened, and in a migration
 * back and forth neither side keeps an L2 table cached from before; QEMU (qemu-io) as the
 * writing source works the same. Real qemu-img and qemu-io check the result.
 */
class Qcow2HandOverTest {
    private static final int CLUSTER = 4096; // one L2 table maps 2 MiB: new tables are easy to make
    private static final long SIZE = 64L << 20;

    @TempDir
    Path dir;

    private Path overlay(Path base) throws Exception {
        return DriverRig.create(dir, "vm.qcow2", String.valueOf(SIZE), "-o", "cluster_size=" + CLUSTER, "-b",
                base.toString(), "-F", "raw");
    }

    private Path base() throws IOException {
        Path base = dir.resolve("base.raw");
        try (RandomAccessFile f = new RandomAccessFile(base.toFile(), "rw")) {
            f.setLength(SIZE);
            byte[] b = new byte[1 << 20];
            Arrays.fill(b, (byte) 0x11);
            f.write(b); // the first MiB reads 0x11 through the overlay until written
        }
        return base;
    }

    private static Qcow2Driver open(Path img, boolean incoming) {
        return Qcow2.open(img, BackendKind.IO_URING, 16, Qcow2Options.defaults().incoming(incoming));
    }

    private static void write(Qcow2Driver d, long offset, int len, int value) {
        NativeBuffer b = DriverRig.buffer(len);
        byte[] data = new byte[len];
        Arrays.fill(data, (byte) value);
        DriverRig.fill(b, data, 0, len);
        DriverRig rig = new DriverRig(d);
        assertEquals(len, rig.one(rig.write(offset, b, len)), "write at " + offset);
    }

    private static void assertReads(Qcow2Driver d, long offset, int len, int value) {
        NativeBuffer b = DriverRig.buffer(len);
        DriverRig.poison(b);
        DriverRig rig = new DriverRig(d);
        assertEquals(len, rig.one(rig.read(offset, b, len)), "read at " + offset);
        byte[] want = new byte[len];
        Arrays.fill(want, (byte) value);
        assertArrayEquals(want, DriverRig.bytes(b, len), "bytes at " + offset);
    }

    private static void assertRefused(Qcow2Driver d) {
        NativeBuffer b = DriverRig.buffer(4096);
        DriverRig rig = new DriverRig(d);
        assertEquals(-Errno.EROFS, rig.write(0, b, 4096), "an inactive image refuses writes");
        assertEquals(-Errno.EROFS, rig.writeZeroes(0, 4096));
        assertEquals(-Errno.EROFS, rig.discard(0, 4096));
        assertEquals(-Errno.EIO, rig.read(0, b, 4096), "its tables may be stale: no reads either");
    }

    private static void qemuIoPattern(Path img, long offset, int len, int value) {
        QemuTools.Run r = QemuTools.qemuIo("-r", "-f", "qcow2", "-c",
                "read -P 0x" + Integer.toHexString(value) + " " + offset + " " + len, img.toString());
        assertEquals(0, r.code(), r.output());
        assertFalse(r.output().contains("failed"), "qemu-io reads 0x" + Integer.toHexString(value) + " at " + offset + ": "
                + r.output());
    }

    private static void assertCheckClean(Path img) {
        QemuTools.Run check = QemuTools.qemuImg("check", "-f", "qcow2", img.toString());
        assertEquals(0, check.code(), check.output());
        assertTrue(check.output().contains("No errors were found"), check.output());
        assertFalse(check.output().contains("leaked"), check.output());
    }

    @Test
    void theDestinationSeesEverythingTheSourceWroteAndAMigrationBackAndForthKeepsNoStaleTable() throws Exception {
        Path img = overlay(base());
        Qcow2Driver src = open(img, false);
        Qcow2Driver dst = null;
        try {
            write(src, 0, CLUSTER, 0xa1); // L2 table 0
            dst = open(img, true);
            assertFalse(dst.active());
            assertRefused(dst);
            // The source allocates on after the destination opened: a new L2 table (the L1
            // table changes), more entries in table 0, and clusters past the file's end then.
            write(src, 32L << 20, CLUSTER, 0xb2);
            write(src, 2 * CLUSTER, CLUSTER, 0xc3);
            write(src, (48L << 20) + CLUSTER, 2 * CLUSTER, 0xd4);
            assertEquals(QemuTools.WRITER_BYTES, QemuTools.heldLockBytes(img), "the source writes, the destination shares");

            // The hand-over: source inactive, destination active.
            assertTrue(src.inactivate());
            assertFalse(src.active());
            assertRefused(src);
            assertEquals(QemuTools.INACTIVE_BYTES, QemuTools.heldLockBytes(img), "both inactive: nobody writes");
            assertTrue(dst.activate());
            assertTrue(dst.active());
            assertEquals(QemuTools.WRITER_BYTES, QemuTools.heldLockBytes(img));
            assertReads(dst, 0, CLUSTER, 0xa1);
            assertReads(dst, 32L << 20, CLUSTER, 0xb2);
            assertReads(dst, 2 * CLUSTER, CLUSTER, 0xc3);
            assertReads(dst, (48L << 20) + CLUSTER, 2 * CLUSTER, 0xd4);
            assertReads(dst, 5 * CLUSTER, CLUSTER, 0x11); // still the backing file's
            write(dst, 4 * CLUSTER, CLUSTER, 0xe5); // table 0 again, now cached by the destination

            // And back: the source must drop its cached table 0 (it wrote 0 and 2 there).
            assertTrue(dst.inactivate());
            assertTrue(src.activate());
            assertReads(src, 4 * CLUSTER, CLUSTER, 0xe5);
            assertReads(src, 0, CLUSTER, 0xa1);
            write(src, 5 * CLUSTER, CLUSTER, 0xf6);
            write(src, 40L << 20, CLUSTER, 0x17);

            // And over again: the destination read table 0 before, its copy is stale now.
            assertTrue(src.inactivate());
            assertTrue(dst.activate());
            assertReads(dst, 5 * CLUSTER, CLUSTER, 0xf6);
            assertReads(dst, 4 * CLUSTER, CLUSTER, 0xe5);
            assertReads(dst, 40L << 20, CLUSTER, 0x17);
            write(dst, 60L << 20, 4 * CLUSTER, 0x28); // the file grows past what the source knew

            // The old source goes away inactive: it writes nothing (no refcounts, no truncation).
            byte[] before = Files.readAllBytes(img);
            src.close();
            src = null;
            assertArrayEquals(before, Files.readAllBytes(img), "an inactive driver's close writes nothing");
        } finally {
            if (src != null) {
                src.close();
            }
            if (dst != null) {
                dst.close();
            }
        }
        assertCheckClean(img);
        qemuIoPattern(img, 0, CLUSTER, 0xa1);
        qemuIoPattern(img, 2 * CLUSTER, CLUSTER, 0xc3);
        qemuIoPattern(img, 4 * CLUSTER, CLUSTER, 0xe5);
        qemuIoPattern(img, 5 * CLUSTER, CLUSTER, 0xf6);
        qemuIoPattern(img, 6 * CLUSTER, CLUSTER, 0x11);
        qemuIoPattern(img, 32L << 20, CLUSTER, 0xb2);
        qemuIoPattern(img, 40L << 20, CLUSTER, 0x17);
        qemuIoPattern(img, (48L << 20) + CLUSTER, 2 * CLUSTER, 0xd4);
        qemuIoPattern(img, 60L << 20, 4 * CLUSTER, 0x28);
    }

    @Test
    void anIncomingImageWritesNothingBeforeItsActivationNotEvenWithTheDirtyBitSet() throws Exception {
        Path img = DriverRig.create(dir, "in.qcow2", String.valueOf(SIZE));
        assertTrue(Files.size(img) % 65536 != 0, "qemu-img leaves the file inside a cluster (an active open rounds it)");
        setDirty(img, true); // a source with lazy refcounts holds it set while it runs
        FileTime mtime = FileTime.fromMillis(1_000_000_000_000L);
        Files.setLastModifiedTime(img, mtime);
        byte[] before = Files.readAllBytes(img);
        Qcow2Driver dst = open(img, true);
        try {
            assertFalse(dst.active());
            assertEquals(QemuTools.INACTIVE_BYTES, QemuTools.heldLockBytes(img), "a reader that shares writing");
            assertRefused(dst);
            assertThrows(IOException.class, () -> dst.resize(SIZE * 2));
            assertFalse(dst.inactivate(), "inactive already");
            // Not activated while the bit is set (the source did not write its refcounts back).
            IOException e = assertThrows(IOException.class, dst::activate);
            assertTrue(e.getMessage().contains("dirty bit"), e.getMessage());
            assertFalse(dst.active());
            assertEquals(QemuTools.INACTIVE_BYTES, QemuTools.heldLockBytes(img), "the writer's locks given back");
            assertArrayEquals(before, Files.readAllBytes(img), "nothing written before the activation");
            assertEquals(mtime, Files.getLastModifiedTime(img));
        } finally {
            dst.close();
        }
        assertArrayEquals(before, Files.readAllBytes(img), "nor at the close of an inactive image");
        assertEquals(mtime, Files.getLastModifiedTime(img));
        assertTrue(dirty(img), "the dirty bit is left alone: no repair while inactive");
    }

    @Test
    void activationIsRefusedWhileAnotherWriterHoldsTheImageWhichStaysInactive() throws Exception {
        Path img = DriverRig.create(dir, "held.qcow2", String.valueOf(SIZE), "-o", "cluster_size=" + CLUSTER);
        Qcow2Driver src = open(img, false);
        Qcow2Driver dst = open(img, true);
        try {
            write(src, 0, CLUSTER, 0x31);
            ImageLock.LockedException e = assertThrows(ImageLock.LockedException.class, dst::activate);
            assertTrue(e.getMessage().contains("\"write\""), e.getMessage());
            assertFalse(dst.active());
            assertRefused(dst);
            write(src, CLUSTER, CLUSTER, 0x32); // the source goes on writing
            assertTrue(src.inactivate());
            // The refused activation kept nothing of the writer's set.
            assertEquals(QemuTools.INACTIVE_BYTES, QemuTools.heldLockBytes(img));
            assertTrue(dst.activate());
            assertReads(dst, 0, CLUSTER, 0x31);
            assertReads(dst, CLUSTER, CLUSTER, 0x32);
            // Now the old source's start is refused the same way.
            assertThrows(ImageLock.LockedException.class, src::activate);
            assertFalse(src.active());
        } finally {
            src.close();
            dst.close();
        }
        assertCheckClean(img);
    }

    @Test
    void anIncomingDriverTakesOverWhatQemuWroteBesideIt() throws Exception {
        Path img = DriverRig.create(dir, "q.qcow2", String.valueOf(SIZE), "-o", "cluster_size=" + CLUSTER);
        Qcow2Driver dst = open(img, true);
        try {
            // QEMU (qemu-io, a writer's locks) allocates beside the inactive driver, then closes.
            QemuTools.Run w = QemuTools.qemuIo("-f", "qcow2", "-c", "write -P 0x42 0 64k", "-c",
                    "write -P 0x43 " + (32L << 20) + " 4k", img.toString());
            assertEquals(0, w.code(), w.output());
            assertFalse(w.output().contains("lock"), w.output());
            assertTrue(dst.activate());
            assertReads(dst, 0, 65536, 0x42);
            assertReads(dst, 32L << 20, CLUSTER, 0x43);
            write(dst, 16L << 20, CLUSTER, 0x44);
        } finally {
            dst.close();
        }
        assertCheckClean(img);
        qemuIoPattern(img, 0, 65536, 0x42);
        qemuIoPattern(img, 16L << 20, CLUSTER, 0x44);
    }

    /** The header's incompatible feature bit 0 (dirty), at byte 72+7. */
    private static void setDirty(Path img, boolean on) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.seek(79);
            int b = f.read();
            f.seek(79);
            f.write(on ? b | 1 : b & ~1);
        }
    }

    private static boolean dirty(Path img) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "r")) {
            f.seek(79);
            return (f.read() & 1) != 0;
        }
    }
}
