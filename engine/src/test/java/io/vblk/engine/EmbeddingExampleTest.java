package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.vring.SplitQueueDriver;

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
}
