package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import io.vblk.hostmem.GuestMemory;
import io.vblk.testkit.SplitQueueDriver;

class SplitQueueDriverTest {
    private final Rig rig = Rig.create(8, false, true);
    private final long buf = rig.driver.allocate(4096, 64);

    @AfterEach
    void close() {
        rig.close();
    }

    private int add(int count, int direct) {
        long[] gpas = new long[count];
        int[] lens = new int[count];
        boolean[] wr = new boolean[count];
        for (int i = 0; i < count; i++) {
            gpas[i] = buf + 64L * i;
            lens[i] = 16;
            wr[i] = i == count - 1;
        }
        return rig.driver.add(gpas, lens, wr, count, direct);
    }

    @Test
    void directChainsUseOneDescriptorPerBufferIndirectOnlyOne() {
        assertEquals(8, rig.driver.freeDescriptors());
        add(3, 3);
        assertEquals(5, rig.driver.freeDescriptors());
        add(6, 0);
        assertEquals(4, rig.driver.freeDescriptors());
        add(5, 2);
        assertEquals(1, rig.driver.freeDescriptors());
        assertEquals(SplitQueueDriver.NO_SPACE, add(2, 2));
        assertEquals(3, rig.driver.outstanding());
    }

    @Test
    void reapFreesDescriptorsInAnyOrder() {
        List<Integer> heads = new ArrayList<>();
        heads.add(add(3, 3));
        heads.add(add(2, 2));
        heads.add(add(3, 0));
        rig.driver.publishAvail();
        List<Integer> popped = new ArrayList<>();
        while (rig.pop() == 1) {
            popped.add(rig.chain.head());
        }
        assertEquals(heads, popped);
        for (int i = 2; i >= 0; i--) {
            rig.queue.addUsed(heads.get(i), i);
        }
        rig.queue.publishUsed();
        for (int i = 2; i >= 0; i--) {
            assertEquals(heads.get(i), rig.driver.reap());
            assertEquals(i, rig.driver.lastUsedLength());
        }
        assertEquals(8, rig.driver.freeDescriptors());
        // descriptors are reusable: fill the whole table again
        for (int i = 0; i < 4; i++) {
            assertTrue(add(2, 2) >= 0);
        }
        assertEquals(0, rig.driver.freeDescriptors());
    }

    @Test
    void exposeEachAddShowsEveryChainAtOnceAndDecidesTheKickOncePerPublish() {
        try (Rig r = Rig.create(16, true, true)) {
            long b = r.driver.allocate(4096, 64);
            long[] gpas = {b, b + 64};
            int[] lens = {16, 1};
            boolean[] wr = {false, true};
            // Default: nothing is visible before publishAvail.
            r.driver.addDirect(gpas, lens, wr, 2);
            assertEquals(0, r.pop(), "a chain is invisible until publishAvail");
            assertTrue(r.driver.publishAvail(), "avail_event 0 is in the window [0, 1)");
            assertEquals(1, r.pop());
            // Linux's virtqueue_add_split: each add stores avail.idx.
            r.driver.exposeEachAdd(true);
            r.driver.addDirect(gpas, lens, wr, 2);
            assertEquals(1, r.pop(), "visible as soon as it is added");
            r.driver.addDirect(gpas, lens, wr, 2);
            // The device, awake, asked for no kick (avail_event stays 0 until it sleeps): the
            // publish of the window [1, 3) does not kick although its chains were seen one by one.
            assertFalse(r.driver.publishAvail(), "the device did not ask (avail_event is behind the window)");
            // The device goes to sleep: avail_event = next_avail (2); the chain still unseen is found.
            assertTrue(r.queue.enableNotifications());
            assertEquals(1, r.pop());
            assertFalse(r.queue.enableNotifications(), "now avail_event 3 and nothing available");
            r.driver.addDirect(gpas, lens, wr, 2);
            r.driver.addDirect(gpas, lens, wr, 2);
            assertTrue(r.driver.publishAvail(), "one kick for the window [3, 5), which passed avail_event 3");
            assertFalse(r.driver.publishAvail(), "nothing added since");
            assertEquals(1, r.pop());
            assertEquals(1, r.pop());
            assertEquals(0, r.pop());
        }
    }

    @Test
    void reportsADeviceThatReturnsAnIdTwiceOrOutOfRange() {
        int head = add(2, 2);
        rig.driver.publishAvail();
        rig.pop();
        rig.queue.addUsed(head, 0);
        rig.queue.addUsed(head, 0);
        rig.queue.addUsed(99, 0);
        rig.queue.publishUsed();
        assertEquals(head, rig.driver.reap());
        assertEquals(SplitQueueDriver.BAD_USED_ID, rig.driver.reap());
        assertEquals(SplitQueueDriver.BAD_USED_ID, rig.driver.reap());
        assertEquals(SplitQueueDriver.NONE, rig.driver.reap());
    }

    @Test
    void refusesLayoutsThatDoNotFit() {
        GuestMemory mem = rig.mem;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SplitQueueDriver.builder(mem).size(256).area(Rig.HOLE - 4096, 4096).build());
        assertTrue(e.getMessage().contains("size 256"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> SplitQueueDriver.builder(mem).size(3).area(0, 65536).build());
        assertThrows(IllegalArgumentException.class,
                () -> SplitQueueDriver.builder(mem).size(8).rings(0x1008, 0x2000, 0x3000).build());
        assertThrows(IllegalArgumentException.class,
                () -> SplitQueueDriver.builder(mem).size(8).rings(0x1000, 0x2000, Rig.READ_ONLY).build(),
                "the driver writes every ring at set-up");
    }

    @Test
    void refusesChainsTheLayoutCannotHold() {
        assertThrows(IllegalArgumentException.class, () -> add(9, 0), "indirect tables hold 8 entries");
        assertThrows(IllegalArgumentException.class, () -> add(0, 0));
        assertThrows(IllegalArgumentException.class, () -> add(2, 3));
    }

    @Test
    void heapAllocationsAreAlignedAndBounded() {
        long a = rig.driver.allocate(1, 1);
        long b = rig.driver.allocate(100, 4096);
        assertEquals(0, b % 4096);
        assertTrue(b > a);
        assertThrows(IllegalStateException.class, () -> rig.driver.allocate(1L << 30, 8));
        assertThrows(IllegalArgumentException.class, () -> rig.driver.allocate(8, 3));
    }

    @Test
    void areaLayoutIsTheLegacyLayout() {
        // virtio 1.2 2.7.2: desc, avail, padding to the next 4 KiB, used
        assertEquals(8192 + 6 + 8 * 256, SplitQueueDriver.Builder.ringBytes(256));
        SplitQueueDriver d = SplitQueueDriver.builder(rig.mem).size(256).area(0x40000, 0x20000).build();
        assertEquals(0x40000, d.descGpa());
        assertEquals(0x40000 + 4096, d.availGpa());
        assertEquals(0x40000 + 8192, d.usedGpa());
    }
}
