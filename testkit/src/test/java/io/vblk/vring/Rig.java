package io.vblk.vring;

import java.util.ArrayList;
import java.util.List;

import io.vblk.hostmem.GuestMemory;
import io.vblk.hostmem.GuestRegion;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.RingTamperer;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A driver and a device on one queue in guarded guest memory (PROT_NONE pages around every
 * region: a stray access kills the test run instead of passing):
 *
 * <pre>
 *  gpa 0x000000 - 0x100000  region 0, RW: rings at 0x10000, indirect tables, heap
 *  gpa 0x100000 - 0x200000  region 1, RW, adjacent to region 0 (buffers across it split)
 *  gpa 0x200000 - 0x300000  hole
 *  gpa 0x300000 - 0x310000  region 2, read-only
 * </pre>
 */
final class Rig implements AutoCloseable {
    static final long RING_AREA = 0x10000;
    static final long REGION1 = 0x100000;
    static final long HOLE = 0x200000;
    static final long READ_ONLY = 0x300000;

    final GuestMemory mem;
    final SplitQueueDriver driver;
    /** Writes the rings verbatim: corrupt rings for the device to meet. */
    final RingTamperer tamper;
    final SplitQueue queue;
    final DescriptorChain chain;
    final List<QueueError> reported = new ArrayList<>();

    private Rig(GuestMemory mem, SplitQueueDriver driver, int size, boolean eventIdx, boolean indirect) {
        this.mem = mem;
        this.driver = driver;
        this.tamper = RingTamperer.of(driver);
        this.queue = new SplitQueue(3, 16, (index, e) -> reported.add(e));
        int rc = queue.activate(mem, size, driver.descGpa(), driver.availGpa(), driver.usedGpa(), eventIdx, indirect);
        if (rc != 0) {
            throw new IllegalStateException("activation failed: " + QueueError.ofCode(rc));
        }
        this.chain = queue.newChain();
    }

    static GuestMemory guestMemory() {
        int roFd = Memfd.create("ro", 0x10000);
        try {
            return GuestMemory.builder().guarded(true).addMemfd(0, 0x100000).addMemfd(REGION1, 0x100000)
                    .addRegion(READ_ONLY, 0x10000, roFd, 0, 0, true).build();
        } finally {
            Native.libc().close(roFd);
        }
    }

    static Rig create(int size, boolean eventIdx, boolean indirect) {
        GuestMemory mem = guestMemory();
        SplitQueueDriver driver = SplitQueueDriver.builder(mem).size(size).eventIdx(eventIdx).indirectEntries(8)
                .area(RING_AREA, 0xf0000 - RING_AREA).build();
        return new Rig(mem, driver, size, eventIdx, indirect);
    }

    static Rig create(int size) {
        return create(size, false, true);
    }

    int pop() {
        return queue.pop(chain);
    }

    /** Offers a raw head and publishes it. */
    void offer(int head) {
        tamper.offerRaw(head);
        driver.publishAvail();
    }

    /** The guest address of a host address inside guest memory, or -1. */
    long gpaOf(long host) {
        for (int i = 0; i < mem.regionCount(); i++) {
            GuestRegion r = mem.region(i);
            long offset = host - r.hostAddress();
            if (offset >= 0 && offset < r.size()) {
                return r.guestAddress() + offset;
            }
        }
        return -1;
    }

    /** Segment {@code i} as "R|W gpa+len" for readable assertions. */
    String segment(int i) {
        return String.format("%s 0x%x+%d", chain.writable(i) ? "W" : "R", gpaOf(chain.address(i)), chain.length(i));
    }

    List<String> segments() {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < chain.segmentCount(); i++) {
            out.add(segment(i));
        }
        return out;
    }

    @Override
    public void close() {
        mem.close();
    }
}
