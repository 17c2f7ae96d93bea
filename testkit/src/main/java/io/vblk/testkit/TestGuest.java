package io.vblk.testkit;

import java.util.ArrayList;
import java.util.List;

import io.vblk.hostmem.GuestMemory;
import io.vblk.hostmem.GuestRegion;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;

/**
 * A guest's RAM as QEMU holds it: one memfd, mapped by the frontend, cut into two regions at
 * different offsets of the same file (as QEMU does with -m 3G on q35: low RAM and RAM above
 * 4 GiB). The regions' user addresses are this process's mappings, so ring addresses the tests
 * send are true frontend virtual addresses.
 *
 * <pre>
 *  memfd:  [ 0 .. 4 MiB )              [ 4 MiB .. 8 MiB )
 *  guest:  gpa 0 (low: data buffers)   gpa 4 GiB (high: rings and request headers)
 * </pre>
 */
public final class TestGuest implements AutoCloseable {
    /** Bytes of each region. */
    public static final long REGION_BYTES = 4L << 20;
    /** Guest address of the low region (data buffers). */
    public static final long LOW_GPA = 0;
    /** Guest address of the high region (rings and request headers). */
    public static final long HIGH_GPA = 4L << 30;

    /** The memfd of the guest's RAM (the frontend sends it with the memory table). */
    public final int fd;
    /** The guest's RAM as this process maps it. */
    public final GuestMemory memory;
    private final List<BlkQueue> queues = new ArrayList<>();

    /** Creates the memfd and maps both regions. */
    public TestGuest() {
        fd = Memfd.create("test-guest", 2 * REGION_BYTES);
        memory = GuestMemory.builder()
                .addRegion(LOW_GPA, REGION_BYTES, fd, 0, 0, false)
                .addRegion(HIGH_GPA, REGION_BYTES, fd, REGION_BYTES, 0, false)
                .build();
    }

    /** The regions as the protocol describes them (user address = where this process mapped them). */
    public VhostUserFrontend.Region[] regions() {
        VhostUserFrontend.Region[] r = new VhostUserFrontend.Region[memory.regionCount()];
        for (int i = 0; i < r.length; i++) {
            GuestRegion g = memory.region(i);
            r[i] = new VhostUserFrontend.Region(g.guestAddress(), g.size(), g.hostAddress(), g.fdOffset());
        }
        return r;
    }

    /** The frontend's virtual address of {@code gpa}. */
    public long user(long gpa) {
        return memory.hostAddress(gpa, 1, false);
    }

    /**
     * A driver for queue {@code q} whose rings lie at 256 KiB steps in high memory, with data
     * buffers at 256 KiB steps in low memory.
     */
    public BlkQueue queue(int q, int size, boolean eventIdx) {
        return queue(q, size, eventIdx, q);
    }

    /** A driver for queue {@code q} in ring area {@code slot} (0 to 15): a driver that moves its rings uses another slot. */
    public BlkQueue queue(int q, int size, boolean eventIdx, int slot) {
        SplitQueueDriver driver = SplitQueueDriver.builder(memory).size(size).eventIdx(eventIdx)
                .area(HIGH_GPA + slot * (256L << 10), 256L << 10).build();
        BlkQueue b = new BlkQueue(memory, q, driver, LOW_GPA + (1L << 20) + slot * (128L << 10));
        queues.add(b);
        return b;
    }

    @Override
    public void close() {
        queues.forEach(BlkQueue::close);
        memory.close();
        Native.libc().close(fd);
    }
}
