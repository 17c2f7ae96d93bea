package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.ImageLock.Locking;
import io.vblk.sys.NativeBuffer;

/**
 * An activation (a migration's destination taking the image over) clears the header's
 * autoclear bits durably before its first write, through the same durable metadata write as a
 * resize. Its failures follow the same rule: a header write that reached the file but whose
 * fdatasync failed leaves what the disk holds unknown (and the writeback error is consumed), so
 * the activation fails and, even once a later one succeeds, every guest FLUSH fails with EIO and
 * the image is not handed over again; a write the host refused before any of it reached the file
 * only fails that activation: the bits are still set on disk, the next activation clears them
 * and the guest's FLUSH succeeds.
 */
class Qcow2ActivationStickyTest {
    @TempDir
    Path dir;

    @Test
    void aFailedFdatasyncOfTheAutoclearClearIsSticky() throws Exception {
        Path img = image();
        HeaderFaultHost host = incoming(img);
        try (Qcow2Driver d = host.open(Qcow2Options.defaults().incoming(true))) {
            assertFalse(d.active());
            host.failNextHeaderWrite = true;
            assertThrows(IOException.class, d::activate, "the header's fdatasync failed");
            assertFalse(host.failNextHeaderWrite, "the header write was attempted");
            assertFalse(d.active());
            assertTrue(d.activate(), "a second activation");
            assertEquals(0, autoclear(img));
            DriverRig rig = new DriverRig(d);
            assertEquals(4096, rig.one(rig.write(0, data(), 4096)), "writes complete");
            assertEquals(-Errno.EIO, rig.one(rig.flush()), "the FLUSH after the failed fdatasync");
            assertEquals(-Errno.EIO, rig.one(rig.flush()), "and every later one");
            IOException e = assertThrows(IOException.class, d::inactivate, "nor is the image handed over");
            assertTrue(e.getMessage().contains("earlier flush failed"), e.getMessage());
        }
    }

    @Test
    void aHeaderWriteRefusedBeforeReachingTheFileIsNotSticky() throws Exception {
        Path img = image();
        HeaderFaultHost host = incoming(img);
        try (Qcow2Driver d = host.open(Qcow2Options.defaults().incoming(true))) {
            host.dropNextHeaderWrite = true;
            assertThrows(IOException.class, d::activate, "the header write was refused");
            assertFalse(host.dropNextHeaderWrite, "the header write was attempted");
            assertFalse(d.active());
            assertEquals(1, autoclear(img), "nothing was written");
            assertTrue(d.activate(), "a second activation");
            assertEquals(0, autoclear(img), "it cleared the bits before its first write");
            DriverRig rig = new DriverRig(d);
            assertEquals(4096, rig.one(rig.write(0, data(), 4096)));
            assertEquals(0, rig.one(rig.flush()), "the failed activation wrote nothing: FLUSH succeeds");
            assertTrue(d.inactivate(), "and the image can be handed over");
        }
    }

    /** A v3 image with a persistent bitmap: its autoclear bit 0 (bitmaps extension) set. */
    private Path image() throws Exception {
        Path img = DriverRig.create(dir, "a.qcow2", "4M", "-o", "compat=1.1");
        DriverRig.qemuImg("bitmap", "--add", img.toString(), "b0");
        assertEquals(1, autoclear(img));
        return img;
    }

    /** The image opened as a migration's destination would be: the inactive lock set. */
    private static HeaderFaultHost incoming(Path img) throws IOException {
        return new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true, Locking.ON, true));
    }

    private static NativeBuffer data() {
        NativeBuffer a = DriverRig.buffer(4096);
        a.buffer().setMemory(0, 4096, (byte) 0x5a);
        return a;
    }

    private static long autoclear(Path img) throws IOException {
        try (FileChannel ch = FileChannel.open(img)) {
            ByteBuffer h = ByteBuffer.allocate(8);
            Qcow2Image.readFully(ch, h, Qcow2Descriptor.AUTOCLEAR_FEATURES_OFFSET);
            return h.flip().getLong();
        }
    }
}
