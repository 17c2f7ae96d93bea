package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * The metadata read again at the first request is held to what a writable open refused: a dirty
 * bit set since the open (another writer's lazy refcounts) fails the requests with EIO, and the
 * image is not marked corrupt for it. A header changed into something this driver does not take
 * (another size, an unacceptable L1 offset) fails them too, and is left byte for byte as the
 * other writer put it: marking it corrupt wrote back the header sector read at open.
 */
class Qcow2ReloadAtStartTest {
    @Test
    void aDirtyBitSetBeforeTheFirstRequestFailsIt(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "d.qcow2", "4M");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            setIncompatible(img, incompatible(img) | Qcow2Descriptor.INCOMPAT_DIRTY);
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            b.buffer().setMemory(0, 4096, (byte) 0x42);
            assertEquals(-Errno.EIO, rig.one(rig.write(0, b, 4096)), "a write to an image now dirty");
        }
        assertEquals(Qcow2Descriptor.INCOMPAT_DIRTY, incompatible(img), "not marked corrupt: the image is not");
    }

    @Test
    void aSizeChangedBeforeTheFirstRequestFailsItAndLeavesTheHeader(@TempDir Path dir) throws Exception {
        changedHeaderIsLeftAlone(dir, Qcow2Descriptor.SIZE_OFFSET, 8L << 20);
    }

    @Test
    void anUnacceptableL1OffsetBeforeTheFirstRequestFailsItAndLeavesTheHeader(@TempDir Path dir) throws Exception {
        changedHeaderIsLeftAlone(dir, Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET, 12345L); // not cluster aligned
    }

    private static void changedHeaderIsLeftAlone(Path dir, int field, long value) throws Exception {
        Path img = DriverRig.create(dir, "d.qcow2", "4M");
        byte[] changed;
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
                ch.write(ByteBuffer.allocate(8).putLong(value).flip(), field); // another writer's header
                ch.force(false);
            }
            changed = header(img);
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            b.buffer().setMemory(0, 4096, (byte) 0x42);
            assertEquals(-Errno.EIO, rig.one(rig.write(0, b, 4096)), "a write to an image changed under the driver");
            assertEquals(-Errno.EIO, rig.one(rig.flush()), "a flush");
        }
        assertArrayEquals(changed, header(img), "the other writer's header is left as it is");
    }

    /** The first 4 KiB: the header sector whatever the logical block size. */
    private static byte[] header(Path img) throws Exception {
        try (FileChannel ch = FileChannel.open(img)) {
            ByteBuffer h = ByteBuffer.allocate(4096);
            Qcow2Image.readFully(ch, h, 0);
            return h.array();
        }
    }

    private static long incompatible(Path img) throws Exception {
        try (FileChannel ch = FileChannel.open(img)) {
            ByteBuffer h = ByteBuffer.allocate(8);
            Qcow2Image.readFully(ch, h, Qcow2Descriptor.INCOMPATIBLE_FEATURES_OFFSET);
            return h.flip().getLong();
        }
    }

    private static void setIncompatible(Path img, long value) throws Exception {
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).putLong(value).flip(), Qcow2Descriptor.INCOMPATIBLE_FEATURES_OFFSET);
            ch.force(false);
        }
    }
}
