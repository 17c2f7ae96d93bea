package io.vblk.vring;

import static io.vblk.vring.VirtqDescriptor.F_INDIRECT;
import static io.vblk.vring.VirtqDescriptor.F_NEXT;
import static io.vblk.vring.VirtqDescriptor.F_WRITE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * One test per corruption rule of the checklist, each named after its virtio 1.2 clause. Every
 * test checks the whole contract: pop returns the error's code, the queue is quarantined, the
 * owner is told exactly once, the quarantine is sticky, and nothing is pushed afterwards.
 */
class SplitQueueCorruptionTest {
    private Rig rig = Rig.create(8);
    private final long buf = rig.driver.allocate(4096, 4096);

    @AfterEach
    void close() {
        rig.close();
    }

    private void assertQuarantined(QueueError expected) {
        assertEquals(expected.code(), rig.pop(), "pop must return the error code");
        assertTrue(rig.queue.quarantined());
        assertEquals(expected, rig.queue.error());
        assertEquals(List.of(expected), rig.reported, "owner told exactly once");
        assertEquals(expected.code(), rig.pop(), "sticky until reset");
        assertEquals(List.of(expected), rig.reported, "not told twice");
        rig.queue.addUsed(0, 1);
        assertFalse(rig.queue.publishUsed(), "a quarantined queue stops using the ring");
        assertEquals(0, rig.driver.usedIdx());
        assertFalse(rig.queue.enableNotifications());
        rig.queue.reset();
        assertFalse(rig.queue.quarantined());
        assertNull(rig.queue.error());
    }

    private void offerValid() {
        rig.tamper.writeDescriptor(0, buf, 16, 0, 0);
        rig.offer(0);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.6.1/2.7.13: avail.idx more than queue size ahead of next_avail")
    void availIndexTooFarAhead() {
        offerValid();
        rig.tamper.writeAvailIdx(9); // size 8
        assertQuarantined(QueueError.AVAIL_INDEX_AHEAD);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.6.1: avail.idx decremented (seen as 65535 ahead)")
    void availIndexDecremented() {
        offerValid();
        assertEquals(1, rig.pop());
        rig.tamper.writeAvailIdx(0);
        assertQuarantined(QueueError.AVAIL_INDEX_AHEAD);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.6.1: exactly queue size ahead is a full ring, not corruption")
    void availIndexExactlyQueueSizeAheadIsFine() {
        for (int i = 0; i < 8; i++) {
            rig.tamper.writeDescriptor(i, buf, 16, 0, 0);
            rig.tamper.offerRaw(i);
        }
        rig.driver.publishAvail();
        for (int i = 0; i < 8; i++) {
            assertEquals(1, rig.pop());
            assertEquals(i, rig.chain.head());
        }
        assertEquals(0, rig.pop());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5/2.7.13.2: head index >= queue size")
    void headOutOfRange() {
        rig.offer(8);
        assertQuarantined(QueueError.HEAD_OUT_OF_RANGE);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5: next index >= queue size")
    void nextOutOfRange() {
        rig.tamper.writeDescriptor(0, buf, 16, F_NEXT, 8);
        rig.offer(0);
        assertQuarantined(QueueError.NEXT_OUT_OF_RANGE);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.2/2.7.5.3.1: a loop in a direct chain (0 -> 1 -> 0)")
    void loopInDirectChain() {
        rig.tamper.writeDescriptor(0, buf, 16, F_NEXT, 1);
        rig.tamper.writeDescriptor(1, buf, 16, F_NEXT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.CHAIN_TOO_LONG);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.2: a descriptor chained to itself")
    void selfLoop() {
        rig.tamper.writeDescriptor(5, buf, 0, F_NEXT, 5);
        rig.offer(5);
        assertQuarantined(QueueError.CHAIN_TOO_LONG);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3.1: a chain of exactly queue size descriptors is fine")
    void chainOfQueueSizeIsFine() {
        for (int i = 0; i < 8; i++) {
            rig.tamper.writeDescriptor(i, buf + i * 16, 16, i < 7 ? F_NEXT : 0, i + 1);
        }
        rig.offer(0);
        assertEquals(1, rig.pop());
        assertEquals(8, rig.chain.descriptorCount());
        assertEquals(128, rig.chain.readableBytes());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.4.2: device-readable descriptor after a device-writable one")
    void readableAfterWritable() {
        rig.tamper.writeDescriptor(0, buf, 16, F_WRITE | F_NEXT, 1);
        rig.tamper.writeDescriptor(1, buf + 16, 16, 0, 0);
        rig.offer(0);
        assertQuarantined(QueueError.READABLE_AFTER_WRITABLE);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.4.2: readable after writable inside an indirect table")
    void readableAfterWritableInIndirectTable() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, buf, 16, F_WRITE | F_NEXT, 1);
        rig.tamper.writeTableDescriptor(table, 1, buf, 16, 0, 0);
        rig.tamper.writeDescriptor(0, table, 32, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.READABLE_AFTER_WRITABLE);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5: buffer starting outside guest memory (in the hole)")
    void bufferInHole() {
        rig.tamper.writeDescriptor(0, Rig.HOLE + 512, 16, 0, 0);
        rig.offer(0);
        assertQuarantined(QueueError.BUFFER_NOT_MAPPED);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5: buffer running off the end of guest memory into the hole")
    void bufferRunningIntoHole() {
        rig.tamper.writeDescriptor(0, Rig.HOLE - 8, 16, 0, 0);
        rig.offer(0);
        assertQuarantined(QueueError.BUFFER_NOT_MAPPED);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5: addr + len wrapping past 2^64 back to guest address 0")
    void bufferWrappingTheAddressSpace() {
        rig.tamper.writeDescriptor(0, -16L, 32, 0, 0);
        rig.offer(0);
        assertQuarantined(QueueError.BUFFER_NOT_MAPPED);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5: a 4 GiB - 1 length from inside a region")
    void hugeLength() {
        rig.tamper.writeDescriptor(0, buf, -1, F_WRITE, 0);
        rig.offer(0);
        assertQuarantined(QueueError.BUFFER_NOT_MAPPED);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5: device-writable buffer in read-only guest memory")
    void writableBufferInReadOnlyRegion() {
        rig.tamper.writeDescriptor(0, Rig.READ_ONLY, 16, F_WRITE, 0);
        rig.offer(0);
        assertQuarantined(QueueError.BUFFER_READ_ONLY);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5: device-readable buffer in read-only guest memory is fine")
    void readableBufferInReadOnlyRegionIsFine() {
        rig.tamper.writeDescriptor(0, Rig.READ_ONLY, 16, 0, 0);
        rig.offer(0);
        assertEquals(1, rig.pop());
        assertEquals(List.of("R 0x300000+16"), rig.segments());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3.1: INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated")
    void indirectNotNegotiated() {
        rig.close();
        rig = Rig.create(8, false, false);
        long table = rig.driver.allocate(16, 16);
        rig.tamper.writeTableDescriptor(table, 0, table, 16, 0, 0);
        rig.tamper.writeDescriptor(0, table, 16, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_NOT_NEGOTIATED);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3: indirect table length not a multiple of 16")
    void indirectLengthNotMultipleOf16() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeDescriptor(0, table, 24, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_BAD_LENGTH);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3: indirect table of length 0")
    void indirectLengthZero() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeDescriptor(0, table, 0, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_BAD_LENGTH);
    }

    @Test
    @DisplayName("virtio 1.2 2.7/2.7.5.3: indirect table of more than 32768 entries")
    void indirectTooLarge() {
        rig.tamper.writeDescriptor(0, 0, 32769 * 16, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_TOO_LARGE);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3.1: INDIRECT inside an indirect table")
    void nestedIndirect() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, table, 16, F_INDIRECT, 0);
        rig.tamper.writeDescriptor(0, table, 16, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_NESTED);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3.1: INDIRECT and NEXT on the same descriptor")
    void indirectWithNext() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, buf, 16, 0, 0);
        rig.tamper.writeDescriptor(0, table, 16, F_INDIRECT | F_NEXT, 1);
        rig.tamper.writeDescriptor(1, buf, 16, 0, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_WITH_NEXT);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3: indirect table outside guest memory")
    void indirectTableNotMapped() {
        rig.tamper.writeDescriptor(0, Rig.HOLE - 16, 32, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_TABLE_NOT_MAPPED);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3: next beyond the indirect table's entries")
    void indirectNextOutOfRange() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, buf, 16, F_NEXT, 2);
        rig.tamper.writeDescriptor(0, table, 32, F_INDIRECT, 0); // 2 entries: next 2 is out
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_NEXT_OUT_OF_RANGE);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3: a loop inside an indirect table")
    void loopInIndirectTable() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, buf, 16, F_NEXT, 1);
        rig.tamper.writeTableDescriptor(table, 1, buf, 16, F_NEXT, 0);
        rig.tamper.writeDescriptor(0, table, 32, F_INDIRECT, 0);
        rig.offer(0);
        assertQuarantined(QueueError.INDIRECT_CHAIN_TOO_LONG);
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3.2: the WRITE flag of the descriptor pointing to a table is ignored")
    void writeFlagOnPointingDescriptorIsIgnored() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, buf, 16, F_NEXT, 1);
        rig.tamper.writeTableDescriptor(table, 1, buf + 16, 1, F_WRITE, 0);
        rig.tamper.writeDescriptor(0, table, 32, F_INDIRECT | F_WRITE, 0);
        rig.offer(0);
        assertEquals(1, rig.pop());
        assertEquals(List.of(String.format("R 0x%x+16", buf), String.format("W 0x%x+1", buf + 16)), rig.segments());
        assertTrue(rig.chain.indirect());
        assertEquals(2, rig.chain.descriptorCount());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3.2: direct descriptors followed by one indirect table")
    void directThenIndirect() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, buf + 16, 4096 - 32, F_WRITE | F_NEXT, 1);
        rig.tamper.writeTableDescriptor(table, 1, buf + 4096 - 1, 1, F_WRITE, 0);
        rig.tamper.writeDescriptor(6, buf, 16, F_NEXT, 2);
        rig.tamper.writeDescriptor(2, table, 32, F_INDIRECT, 0);
        rig.offer(6);
        assertEquals(1, rig.pop());
        assertEquals(6, rig.chain.head());
        assertEquals(List.of(String.format("R 0x%x+16", buf), String.format("W 0x%x+4064", buf + 16),
                String.format("W 0x%x+1", buf + 4095)), rig.segments());
        assertEquals(3, rig.chain.descriptorCount());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.5.3: the indirect chain starts at entry 0, whatever the table order")
    void indirectChainStartsAtEntryZero() {
        long table = rig.driver.allocate(64, 16);
        rig.tamper.writeTableDescriptor(table, 0, buf, 16, F_NEXT, 2);
        rig.tamper.writeTableDescriptor(table, 1, Rig.HOLE, 16, 0, 0); // never reached
        rig.tamper.writeTableDescriptor(table, 2, buf + 16, 8, F_WRITE, 0);
        rig.tamper.writeDescriptor(0, table, 48, F_INDIRECT, 0);
        rig.offer(0);
        assertEquals(1, rig.pop());
        assertEquals(2, rig.chain.segmentCount());
    }

    @Test
    @DisplayName("zero-length descriptors are skipped, and still count for the chain length and order")
    void zeroLengthDescriptors() {
        rig.tamper.writeDescriptor(0, Rig.HOLE, 0, F_NEXT, 1); // addresses nothing: not checked
        rig.tamper.writeDescriptor(1, buf, 16, F_NEXT, 2);
        rig.tamper.writeDescriptor(2, 0, 0, F_WRITE, 0);
        rig.offer(0);
        assertEquals(1, rig.pop());
        assertEquals(List.of(String.format("R 0x%x+16", buf)), rig.segments());
        assertEquals(3, rig.chain.descriptorCount());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.10.2/2.7.7: a spurious kick finds nothing and harms nothing")
    void spuriousKick() {
        assertEquals(0, rig.pop());
        assertFalse(rig.queue.enableNotifications());
        assertFalse(rig.queue.quarantined());
    }

    @Test
    @DisplayName("a chain with more segments than the view holds pops whole, flagged, last segment kept")
    void overflowingChainKeepsItsLastSegment() {
        DescriptorChain small = new DescriptorChain(2);
        rig.tamper.writeDescriptor(0, buf, 16, F_NEXT, 1);
        rig.tamper.writeDescriptor(1, buf + 16, 512, F_WRITE | F_NEXT, 2);
        rig.tamper.writeDescriptor(2, buf + 528, 512, F_WRITE | F_NEXT, 3);
        rig.tamper.writeDescriptor(3, buf + 1040, 1, F_WRITE, 0);
        rig.offer(0);
        assertEquals(1, rig.queue.pop(small));
        assertTrue(small.overflowed());
        assertEquals(2, small.segmentCount());
        assertEquals(16, small.readableBytes());
        assertEquals(1025, small.writableBytes());
        assertEquals(rig.mem.hostAddress(buf + 1040, 1, true), small.address(1));
        assertEquals(1, small.length(1));
        assertFalse(rig.queue.quarantined());
    }
}
