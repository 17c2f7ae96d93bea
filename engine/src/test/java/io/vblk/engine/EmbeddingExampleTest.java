package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.AtomicBuffer;
import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.hostmem.DirtyLog;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.vring.QueueState;
import io.vblk.testkit.SplitQueueDriver;

/** The README's embedding example, kept compiling and working. */
class EmbeddingExampleTest {
    @TempDir
    Path dir;

    @Test
    void readmeExampleServesAGuestRead() throws Exception {
        Path disk = dir.resolve("disk.img");
        Files.write(disk, new byte[1 << 20]);

        // --- README example starts here ---
        // The VMM's guest RAM: one memfd-backed region at guest-physical 0.
        GuestMemory ram = GuestMemory.builder().addMemfd(0, 64L << 20).build();
        Image image = Image.open(disk, ImageOptions.defaults());          // O_DIRECT by default
        BlkConfig config = BlkConfig.builder(image.sizeBytes()).serial("vm1-disk0").build();
        BlockDevice device = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image))
                .memory(ram)
                .tuning(Tuning.builder().waitStrategy(WaitStrategy.ADAPTIVE).build())
                .build();

        // When the guest driver sets FEATURES_OK and DRIVER_OK with its queue addresses:
        SplitQueueDriver guest = SplitQueueDriver.builder(ram).size(256).eventIdx(true).area(0, 1 << 20).build();
        device.negotiate(config.offeredFeatures());                    // what the driver acked
        device.configureQueue(0, 256, guest.descGpa(), guest.availGpa(), guest.usedGpa());
        EventFd irqfd = EventFd.create(true);                            // or KVM's irqfd
        device.setInterrupt(0, Interrupt.of(irqfd));
        device.startQueue(0);

        // On every guest notification of queue 0 (an ioeventfd, or the VMM's MMIO exit):
        //     device.kick(0);
        // --- README example ends here ---

        long header = guest.allocate(16, 16);
        long data = guest.allocate(4096, 4096);
        long status = guest.allocate(1, 1);
        UnsafeApi.putInt(guest.hostAddress(header, 16), BlkRequestDescriptor.T_IN);
        UnsafeApi.putLong(guest.hostAddress(header, 16) + 8, 0);
        guest.addDirect(new long[] {header, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 3);
        if (guest.publishAvail()) {
            device.kick(0);
        }
        assertEquals(1, irqfd.await(10_000));
        assertEquals(BlkRequestDescriptor.S_OK, UnsafeApi.getByte(guest.hostAddress(status, 1)));

        QueueState saved = device.stopQueue(0);   // drains; resume elsewhere with setQueueState
        assertEquals(1, saved.nextAvail());
        device.close();
        image.close();
        ram.close();
        irqfd.close();
    }
    /** The README's migration example: dirty logging, drain, sync, state saved and restored elsewhere. */
    @Test
    void readmeMigrationExampleHandsTheDeviceOver() throws Exception {
        Path disk = dir.resolve("disk.img");
        byte[] content = new byte[1 << 20];
        new java.util.Random(3).nextBytes(content);
        Files.write(disk, content);
        GuestMemory ram = GuestMemory.builder().addMemfd(0, 64L << 20).build();
        Image image = Image.open(disk, ImageOptions.defaults());
        BlkConfig config = BlkConfig.builder(image.sizeBytes()).serial("vm1-disk0").build();
        BlockDevice device = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image)).memory(ram).build();
        SplitQueueDriver guest = SplitQueueDriver.builder(ram).size(256).eventIdx(true).area(0, 1 << 20).build();
        device.negotiate(config.offeredFeatures());
        device.configureQueue(0, 256, guest.descGpa(), guest.availGpa(), guest.usedGpa());
        EventFd irqfd = EventFd.create(true);
        device.setInterrupt(0, Interrupt.of(irqfd));
        device.startQueue(0);
        long header = guest.allocate(16, 16);
        long data = guest.allocate(4096, 4096);
        long status = guest.allocate(1, 1);

        // --- README migration example starts here ---
        // Source: log every device write into a bitmap the VMM owns (one bit per 4 KiB guest page).
        AtomicBuffer bitmap = new UnsafeBuffer(new byte[(int) DirtyLog.bitmapBytes(64L << 20)]);
        device.startDirtyLog(bitmap);
        // ... copy guest memory while the guest runs; re-copy the pages whose bits are set
        //     (clear them atomically first, e.g. bitmap.getAndAddLong / compareAndSetLong) ...
        assertEquals(BlkRequestDescriptor.S_OK, read(device, guest, irqfd, header, data, status, 8));
        assertTrue(((bitmap.getLong((int) (data >>> 12 >>> 6) * 8) >>> ((data >>> 12) & 63)) & 1) != 0,
                "the page the device read into is marked");
        device.stop();                          // drains every queue: the last writes are logged now
        device.sync();                          // and every completed write is durable in the image
        DeviceState state = device.saveState(); // features, config space, each queue's QueueState
        device.stopDirtyLog();
        // ... copy the last dirty pages, send `state` with the VM ...

        // Destination: a device over the same disk and the migrated memory.
        BlockDevice target = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image)).memory(ram).build();
        target.restoreState(state);             // refuses a state from another disk or shape
        target.setInterrupt(0, Interrupt.of(irqfd));
        target.start();                          // resumes every queue where the source stopped
        // --- README migration example ends here ---

        assertEquals(BlkRequestDescriptor.S_OK, read(target, guest, irqfd, header, data, status, 16));
        byte[] got = new byte[4096];
        UnsafeApi.copyMemory(null, guest.hostAddress(data, 4096), got, UnsafeApi.arrayBaseOffset(byte[].class), 4096);
        assertArrayEquals(java.util.Arrays.copyOfRange(content, 16 * 512, 16 * 512 + 4096), got);
        assertEquals(2, target.queueState(0).nextUsed(), "the destination went on from the source's indices");
        BlockDevice other = BlockDevice.builder(BlkConfig.builder(image.sizeBytes() / 2).build(),
                BackendFactory.of(BackendKind.NULL, null)).memory(ram).build();
        assertThrows(IllegalArgumentException.class, () -> other.restoreState(state), "another disk");
        other.close();
        target.close();
        device.close();
        image.close();
        ram.close();
        irqfd.close();
    }

    private static byte read(BlockDevice device, SplitQueueDriver guest, EventFd irqfd, long header, long data, long status,
            long sector) {
        UnsafeApi.putInt(guest.hostAddress(header, 16), BlkRequestDescriptor.T_IN);
        UnsafeApi.putLong(guest.hostAddress(header, 16) + 8, sector);
        UnsafeApi.putByte(guest.hostAddress(status, 1), (byte) 0x7f);
        guest.addDirect(new long[] {header, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 3);
        if (guest.publishAvail()) {
            device.kick(0);
        }
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (guest.reap() < 0) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("no completion");
            }
            irqfd.await(100);
            irqfd.read();
        }
        return UnsafeApi.getByte(guest.hostAddress(status, 1));
    }
}
