package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.hostmem.GuestMemory;
import io.vblk.testkit.RingTamperer;
import io.vblk.testkit.SplitQueueDriver;

/**
 * The descriptor layouts real drivers produce for virtio-blk requests (virtio 1.2 2.7.4.1: the
 * device must not assume any particular split), each popped, completed and reaped end to end.
 */
class SplitQueueLayoutTest {
    private final Rig rig = Rig.create(128, true, true);

    @AfterEach
    void close() {
        rig.close();
    }

    private static String r(long gpa, int len) {
        return String.format("R 0x%x+%d", gpa, len);
    }

    private static String w(long gpa, int len) {
        return String.format("W 0x%x+%d", gpa, len);
    }

    /** Adds the chain, pops it, checks segments, completes it with {@code written} and reaps it. */
    private void roundTrip(long[] gpas, int[] lens, boolean[] wr, int directCount, List<String> expected) {
        int head = rig.driver.add(gpas, lens, wr, gpas.length, directCount);
        assertTrue(head >= 0);
        assertTrue(rig.driver.publishAvail(), "EVENT_IDX: the device asked for this kick");
        rig.queue.disableNotifications();
        assertEquals(1, rig.pop());
        assertEquals(0, rig.pop());
        assertFalse(rig.queue.enableNotifications(), "nothing more: the device may sleep");
        assertEquals(head, rig.chain.head());
        assertEquals(expected, rig.segments());
        assertEquals(directCount < gpas.length, rig.chain.indirect());
        long written = 0;
        for (int i = 0; i < gpas.length; i++) {
            written += wr[i] ? lens[i] : 0;
        }
        assertEquals(written, rig.chain.writableBytes());
        // the status byte: last byte of the last writable segment
        int last = rig.chain.segmentCount() - 1;
        assertTrue(rig.chain.writable(last));
        new UnsafeBuffer(rig.chain.address(last), rig.chain.length(last)).putByte(rig.chain.length(last) - 1, (byte) 0);
        rig.queue.addUsed(head, (int) written);
        assertTrue(rig.queue.publishUsed(), "EVENT_IDX: the driver asked for this interrupt");
        assertEquals(head, rig.driver.reap());
        assertEquals(written, rig.driver.lastUsedLength());
        assertEquals(SplitQueueDriver.NONE, rig.driver.reap());
        assertFalse(rig.driver.enableInterrupts(), "nothing more: the driver may sleep");
        assertEquals(128, rig.driver.freeDescriptors(), "every descriptor back on the free list");
    }

    @Test
    @DisplayName("Linux virtio-blk read, direct: [header 16 R][data 4096 W][status 1 W]")
    void linuxReadDirect() {
        long hdr = rig.driver.allocate(16, 16);
        long data = rig.driver.allocate(4096, 4096);
        long status = rig.driver.allocate(1, 1);
        roundTrip(new long[] {hdr, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 3,
                List.of(r(hdr, 16), w(data, 4096), w(status, 1)));
    }

    @Test
    @DisplayName("Linux virtio-blk write, indirect: one descriptor -> table [header R][data R][status W]")
    void linuxWriteIndirect() {
        long hdr = rig.driver.allocate(16, 16);
        long data = rig.driver.allocate(8192, 4096);
        long status = rig.driver.allocate(1, 1);
        roundTrip(new long[] {hdr, data, status}, new int[] {16, 8192, 1}, new boolean[] {false, false, true}, 0,
                List.of(r(hdr, 16), r(data, 8192), w(status, 1)));
    }

    @Test
    @DisplayName("Linux scatter-gather read: header, four scattered pages, status, in an indirect table")
    void linuxScatterGather() {
        long hdr = rig.driver.allocate(16, 16);
        long[] pages = new long[4];
        for (int i = 0; i < 4; i++) {
            pages[i] = rig.driver.allocate(4096 * 2, 4096); // every other page
        }
        long status = rig.driver.allocate(1, 1);
        roundTrip(new long[] {hdr, pages[2], pages[0], pages[3], pages[1], status},
                new int[] {16, 4096, 4096, 4096, 4096, 1}, new boolean[] {false, true, true, true, true, true}, 0,
                List.of(r(hdr, 16), w(pages[2], 4096), w(pages[0], 4096), w(pages[3], 4096), w(pages[1], 4096),
                        w(status, 1)));
    }

    @Test
    @DisplayName("header split across two descriptors: [type+reserved 8 R][sector 8 R][data W][status W]")
    void headerSplitAcrossDescriptors() {
        long hdr = rig.driver.allocate(16, 16);
        long data = rig.driver.allocate(512, 512);
        long status = rig.driver.allocate(1, 1);
        roundTrip(new long[] {hdr, hdr + 8, data, status}, new int[] {8, 8, 512, 1},
                new boolean[] {false, false, true, true}, 4, List.of(r(hdr, 8), r(hdr + 8, 8), w(data, 512), w(status, 1)));
    }

    @Test
    @DisplayName("data and status in one descriptor: [header 16 R][data 4096 + status 1, W]")
    void dataAndStatusInOneDescriptor() {
        long hdr = rig.driver.allocate(16, 16);
        long dataAndStatus = rig.driver.allocate(4097, 4096);
        roundTrip(new long[] {hdr, dataAndStatus}, new int[] {16, 4097}, new boolean[] {false, true}, 2,
                List.of(r(hdr, 16), w(dataAndStatus, 4097)));
    }

    @Test
    @DisplayName("header and data in one readable descriptor (a write): [header 16 + data 512, R][status W]")
    void headerAndDataInOneDescriptor() {
        long hdrAndData = rig.driver.allocate(528, 16);
        long status = rig.driver.allocate(1, 1);
        roundTrip(new long[] {hdrAndData, status}, new int[] {528, 1}, new boolean[] {false, true}, 2,
                List.of(r(hdrAndData, 528), w(status, 1)));
    }

    @Test
    @DisplayName("flush: [header 16 R][status 1 W], no data")
    void flushWithoutData() {
        long hdr = rig.driver.allocate(16, 16);
        long status = rig.driver.allocate(1, 1);
        roundTrip(new long[] {hdr, status}, new int[] {16, 1}, new boolean[] {false, true}, 2,
                List.of(r(hdr, 16), w(status, 1)));
    }

    @Test
    @DisplayName("direct header followed by one indirect table holding data and status (2.7.5.3.2)")
    void directHeaderThenIndirect() {
        long hdr = rig.driver.allocate(16, 16);
        long data = rig.driver.allocate(4096, 4096);
        long status = rig.driver.allocate(1, 1);
        roundTrip(new long[] {hdr, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 1,
                List.of(r(hdr, 16), w(data, 4096), w(status, 1)));
    }

    @Test
    @DisplayName("a buffer across two adjacent regions (QEMU's split RAM) becomes two segments")
    void bufferAcrossAdjacentRegions() {
        long hdr = rig.driver.allocate(16, 16);
        long data = Rig.REGION1 - 1024;
        long status = Rig.REGION1 + 3072;
        roundTrip(new long[] {hdr, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 3,
                List.of(r(hdr, 16), w(data, 1024), w(Rig.REGION1, 3072), w(status, 1)));
    }

    @Test
    @DisplayName("SeaBIOS: legacy layout (used ring on the next page), queue 128, [header][512 R][status 1 W]")
    void seabiosLegacyLayout() {
        assertEquals(0, rig.driver.usedGpa() % 4096, "used ring page-aligned as the legacy layout has it");
        assertEquals(rig.driver.descGpa() + 16 * 128, rig.driver.availGpa());
        long hdr = rig.driver.allocate(16, 16);
        long sector = rig.driver.allocate(512, 512);
        long status = rig.driver.allocate(1, 1);
        for (int i = 0; i < 3; i++) { // SeaBIOS submits one request at a time, reusing descriptors 0..2
            roundTrip(new long[] {hdr, sector, status}, new int[] {16, 512, 1}, new boolean[] {false, false, true}, 3,
                    List.of(r(hdr, 16), r(sector, 512), w(status, 1)));
            assertEquals(i + 1, rig.driver.usedIdx());
        }
    }

    @Test
    @DisplayName("a 1-byte status descriptor on the last byte of a region, before a guard page")
    void statusOnTheLastByteOfARegion() {
        long hdr = rig.driver.allocate(16, 16);
        long status = Rig.HOLE - 1;
        roundTrip(new long[] {hdr, status}, new int[] {16, 1}, new boolean[] {false, true}, 2,
                List.of(r(hdr, 16), w(status, 1)));
        assertFalse(rig.queue.quarantined());
    }

    @Test
    @DisplayName("a 3 GiB + 1 descriptor becomes 1 GiB segments (lengths fit an int, O_DIRECT alignment kept)")
    void descriptorsLongerThanOneGibibyte() {
        long gib = 1L << 30;
        // the rings are real memory; the buffer region is only address arithmetic: pop never
        // dereferences a buffer, so its host range need not be mapped
        try (GuestMemory mem = GuestMemory.builder().guarded(true).addMemfd(0, 0x100000)
                .addHostMemory(4 * gib, 4 * gib, 0x7100_0000_0000L, false).build()) {
            SplitQueueDriver d = SplitQueueDriver.builder(mem).size(4).area(0, 0x100000).build();
            SplitQueue q = new SplitQueue(0, 8);
            assertEquals(0, q.activate(mem, 4, d.descGpa(), d.availGpa(), d.usedGpa(), false, false));
            RingTamperer.of(d).writeDescriptor(0, 4 * gib, (int) (3 * gib + 1), VirtqDescriptor.F_WRITE, 0);
            RingTamperer.of(d).offerRaw(0);
            d.publishAvail();
            DescriptorChain c = q.newChain();
            assertEquals(1, q.pop(c));
            assertEquals(4, c.segmentCount());
            for (int i = 0; i < 3; i++) {
                assertEquals(0x7100_0000_0000L + i * gib, c.address(i));
                assertEquals(gib, c.length(i));
            }
            assertEquals(1, c.length(3));
            assertEquals(3 * gib + 1, c.writableBytes());
        }
    }
}
