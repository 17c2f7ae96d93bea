package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * qcow2.txt: "An implementation may only write to an image with unknown auto-clear features if it
 * clears the respective bits from this field first." Written with the bitmaps bit set, QEMU would
 * afterwards trust persistent dirty bitmaps that miss every block vblk wrote (incremental backups
 * silently incomplete; rev14a M3). A read-only open leaves the bits.
 */
class Qcow2AutoclearTest {
    @Test
    void aWritableOpenClearsTheAutoclearBitsBeforeWriting(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "bm.qcow2", "4M");
        DriverRig.qemuImg("bitmap", "--add", img.toString(), "b0");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            b.buffer().setMemory(0, 4096, (byte) 0x42);
            assertEquals(4096, rig.one(rig.write(0, b, 4096)));
            assertEquals(0, rig.one(rig.flush()));
        }
        try (FileChannel ch = FileChannel.open(img)) {
            ByteBuffer h = ByteBuffer.allocate(8);
            Qcow2Image.readFully(ch, h, Qcow2Descriptor.AUTOCLEAR_FEATURES_OFFSET);
            long autoclear = h.flip().getLong();
            String info = DriverRig.run("qemu-img", "info", img.toString()).output();
            assertEquals(0, autoclear, "vblk wrote guest data with autoclear 0x" + Long.toHexString(autoclear)
                    + " still set; QEMU now trusts bitmap b0, which misses that write: " + info);
        }
    }

    @Test
    void aReadOnlyOpenLeavesTheAutoclearBits(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "ro.qcow2", "4M");
        DriverRig.qemuImg("bitmap", "--add", img.toString(), "b0");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(4096, rig.one(rig.read(0, b, 4096)));
        }
        try (FileChannel ch = FileChannel.open(img)) {
            ByteBuffer h = ByteBuffer.allocate(8);
            Qcow2Image.readFully(ch, h, Qcow2Descriptor.AUTOCLEAR_FEATURES_OFFSET);
            assertEquals(1, h.flip().getLong(), "a read-only open writes nothing, the bitmaps bit included");
        }
    }
}
