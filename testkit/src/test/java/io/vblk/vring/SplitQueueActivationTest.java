package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.hostmem.GuestMemory;

class SplitQueueActivationTest {
    private final GuestMemory mem = Rig.guestMemory();
    private final SplitQueue queue = new SplitQueue(0, 8);

    @AfterEach
    void close() {
        mem.close();
    }

    private int activate(int size, long desc, long avail, long used) {
        return queue.activate(mem, size, desc, avail, used, false, false);
    }

    @ParameterizedTest
    @ValueSource(ints = {0, 3, 6, 100, 65536, 32769, -1, Integer.MIN_VALUE})
    @DisplayName("virtio 1.2 2.7: queue size must be a power of 2 up to 32768")
    void refusesBadQueueSizes(int size) {
        assertEquals(QueueError.QUEUE_SIZE_INVALID.code(), activate(size, 0, 0x80000, 0x90000));
        assertTrue(queue.quarantined());
        assertFalse(queue.active());
        assertEquals(QueueError.QUEUE_SIZE_INVALID.code(), queue.pop(new DescriptorChain(1)));
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 256, 32768})
    @DisplayName("virtio 1.2 2.7: sizes 1 to 32768 activate (rings of 16N, 6+2N and 6+8N bytes)")
    void acceptsPowersOfTwo(int size) {
        long desc = 0;
        long avail = desc + 16L * size;
        long used = (avail + 6 + 2L * size + 3) & ~3L;
        assertEquals(0, activate(size, desc, avail, used));
        assertTrue(queue.active());
        assertEquals(size, queue.size());
        assertTrue(queue.chainCapacity() >= size, "a chain of queue-size descriptors fits the view");
    }

    @Test
    @DisplayName("virtio 1.2 2.7.1: descriptor table 16-aligned, available ring 2-aligned, used ring 4-aligned")
    void refusesMisalignedRings() {
        assertEquals(QueueError.DESCRIPTOR_TABLE_MISALIGNED.code(), activate(8, 0x1008, 0x2000, 0x3000));
        assertEquals(QueueError.AVAIL_RING_MISALIGNED.code(), activate(8, 0x1000, 0x2001, 0x3000));
        assertEquals(QueueError.USED_RING_MISALIGNED.code(), activate(8, 0x1000, 0x2000, 0x3002));
        assertEquals(0, activate(8, 0x1010, 0x2002, 0x3004), "the minimum alignments are enough");
    }

    @Test
    @DisplayName("virtio 1.2 2.7: each ring must lie wholly inside one region of guest memory")
    void refusesRingsOutsideGuestMemory() {
        long end = Rig.HOLE;
        assertEquals(QueueError.DESCRIPTOR_TABLE_NOT_MAPPED.code(), activate(8, end - 112, 0x2000, 0x3000),
                "128 bytes from 16 before the hole");
        assertEquals(QueueError.AVAIL_RING_NOT_MAPPED.code(), activate(8, 0x1000, end - 20, 0x3000), "22 bytes needed");
        assertEquals(QueueError.USED_RING_NOT_MAPPED.code(), activate(8, 0x1000, 0x2000, end - 68), "70 bytes needed");
        assertEquals(0, activate(8, end - 128, end - 128 - 22 & ~1L, 0x3000), "exactly fitting is fine");
        assertEquals(QueueError.DESCRIPTOR_TABLE_NOT_MAPPED.code(), activate(8, Rig.REGION1 - 64, 0x2000, 0x3000),
                "a ring across two adjacent regions is refused: it is translated once, to one host range");
        assertEquals(QueueError.USED_RING_NOT_MAPPED.code(), activate(8, 0x1000, 0x2000, Rig.READ_ONLY),
                "the device writes the used ring");
        assertEquals(0, activate(8, Rig.READ_ONLY, Rig.READ_ONLY + 0x1000, 0x3000),
                "the device only reads the descriptor table and available ring");
    }

    @Test
    void constructorRefusesBadArgumentsWithTheirValues() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new SplitQueue(-1, 0));
        assertTrue(e.getMessage().contains("-1") && e.getMessage().contains("0"), e.getMessage());
        assertThrows(NullPointerException.class, () -> queue.activate(null, 8, 0, 0, 0, false, false));
    }

    @Test
    void resetClearsAFailedActivation() {
        assertEquals(QueueError.QUEUE_SIZE_INVALID.code(), activate(3, 0, 0, 0));
        queue.reset();
        assertFalse(queue.quarantined());
        assertEquals(0, queue.pop(new DescriptorChain(1)), "an inactive queue has nothing to pop");
        assertEquals(0, activate(8, 0x1000, 0x2000, 0x3000));
        assertEquals(0, queue.pop(new DescriptorChain(1)));
    }
}
