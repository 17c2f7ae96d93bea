package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.hostmem.GuestMemory;
import io.vblk.hostmem.MemoryMap;

/** Stop/resume state, indices across the 16-bit wrap, re-translation after a memory table change. */
class SplitQueueStateTest {
    private final Rig rig = Rig.create(8, true, true);
    private final long buf = rig.driver.allocate(4096, 64);

    @AfterEach
    void close() {
        rig.close();
    }

    private int add() {
        return rig.driver.addDirect(new long[] {buf, buf + 16}, new int[] {16, 1}, new boolean[] {false, true}, 2);
    }

    private int reactivate(SplitQueue q) {
        return q.activate(rig.mem, 8, rig.driver.descGpa(), rig.driver.availGpa(), rig.driver.usedGpa(), true, true);
    }

    @Test
    @DisplayName("popHead: a recovered in-flight chain is read by its head without consuming an avail entry")
    void popHeadReadsAChainWithoutConsumingAvail() {
        int first = add();
        int second = add();
        rig.driver.publishAvail();
        DescriptorChain chain = rig.queue.newChain();
        assertEquals(1, rig.queue.popHead(second, chain));
        assertEquals(second, chain.head());
        assertEquals(2, chain.segmentCount());
        assertEquals(0, rig.queue.nextAvail(), "next_avail untouched");
        assertEquals(1, rig.pop());
        assertEquals(first, rig.chain.head());
        assertTrue(rig.queue.popHead(8, chain) < 0, "a head beyond the queue size is corrupt (2.7.5.3)");
        assertTrue(rig.queue.quarantined());
    }

    @Test
    @DisplayName("state()/restore(): a queue restored from another's state pops and publishes where that one stopped")
    void stateRestoresIntoAnotherQueue() {
        int[] heads = {add(), add(), add()};
        rig.driver.publishAvail();
        assertEquals(1, rig.pop());
        rig.queue.addUsed(heads[0], 1);
        rig.queue.publishUsed();
        QueueState state = rig.queue.state();
        assertEquals(new QueueState(8, rig.driver.descGpa(), rig.driver.availGpa(), rig.driver.usedGpa(), 1, 1), state);
        assertNull(new SplitQueue(1, 8).state(), "no state before activation");

        SplitQueue restored = new SplitQueue(0, 8);
        assertEquals(0, restored.restore(rig.mem, state, true, true));
        assertEquals(1, restored.nextAvail());
        DescriptorChain chain = restored.newChain();
        assertEquals(1, restored.pop(chain));
        assertEquals(heads[1], chain.head());

        SplitQueue fromRing = new SplitQueue(0, 8);
        assertEquals(0, fromRing.restore(rig.mem, state.withNextUsed(0).withNextAvail(2), true, true));
        assertEquals(0, fromRing.nextUsed(), "an explicit next used index is taken as given");
        SplitQueue usedFromRing = new SplitQueue(0, 8);
        QueueState vhost = new QueueState(8, state.descAddress(), state.availAddress(), state.usedAddress(), 2,
                QueueState.USED_FROM_RING);
        assertEquals(0, usedFromRing.restore(rig.mem, vhost, true, true));
        assertEquals(1, usedFromRing.nextUsed(), "USED_FROM_RING reads used.idx from guest memory");
        assertTrue(new SplitQueue(0, 8).restore(rig.mem, new QueueState(3, 0, 0, 0, 0, 0), true, true) < 0,
                "a size that is not a power of two is refused");
    }

    @Test
    @DisplayName("stop/resume: a new queue set to next_avail (SET_VRING_BASE) and used.idx goes on where the old stopped")
    void resumeFromNextAvailAndUsedIndex() {
        int[] heads = {add(), add(), add()};
        rig.driver.publishAvail();
        assertEquals(1, rig.pop());
        assertEquals(1, rig.pop());
        rig.queue.addUsed(heads[0], 1);
        rig.queue.publishUsed();
        int base = rig.queue.nextAvail(); // GET_VRING_BASE
        assertEquals(2, base);

        SplitQueue resumed = new SplitQueue(0, 8);
        assertEquals(0, reactivate(resumed));
        resumed.setNextAvail(base);
        resumed.setNextUsed(resumed.usedIndexInRing());
        assertEquals(1, resumed.nextUsed());
        DescriptorChain chain = resumed.newChain();
        assertEquals(1, resumed.pop(chain));
        assertEquals(heads[2], chain.head(), "continues after the two already popped");
        assertEquals(0, resumed.pop(chain));
        resumed.addUsed(heads[2], 1);
        assertTrue(resumed.publishUsed(), "the first publish after resume notifies");
        assertEquals(2, rig.driver.usedIdx());
        assertEquals(heads[0], rig.driver.reap());
        assertEquals(heads[2], rig.driver.reap());
    }

    @Test
    @DisplayName("backend restart: base = used.idx re-offers the requests that were in flight (QEMU reconnect)")
    void restartReoffersInFlightRequests() {
        int[] heads = {add(), add(), add()};
        rig.driver.publishAvail();
        for (int i = 0; i < 3; i++) {
            assertEquals(1, rig.pop());
        }
        rig.queue.addUsed(heads[0], 1);
        rig.queue.publishUsed(); // then the backend dies with heads 1 and 2 in flight

        SplitQueue restarted = new SplitQueue(0, 8);
        assertEquals(0, reactivate(restarted));
        int usedIdx = restarted.usedIndexInRing();
        restarted.setNextAvail(usedIdx); // QEMU rewinds its last_avail_idx to used.idx
        restarted.setNextUsed(usedIdx);
        DescriptorChain chain = restarted.newChain();
        Set<Integer> again = new HashSet<>();
        while (restarted.pop(chain) == 1) {
            again.add(chain.head());
        }
        assertEquals(Set.of(heads[1], heads[2]), again);
    }

    @Test
    @DisplayName("free-running u16 indices wrap at 65536 on both sides")
    void indicesWrap() {
        for (int round = 0; round < 33_000; round++) { // 66000 requests: both indices wrap once
            int a = add();
            int b = add();
            rig.driver.publishAvail();
            assertEquals(1, rig.pop());
            assertEquals(1, rig.pop());
            assertEquals(0, rig.pop());
            rig.queue.enableNotifications();
            rig.queue.addUsed(b, 1);
            rig.queue.addUsed(a, 1);
            rig.queue.publishUsed();
            assertEquals(b, rig.driver.reap());
            assertEquals(a, rig.driver.reap());
        }
        assertEquals(66_000 & 0xffff, rig.queue.nextAvail());
        assertEquals(66_000 & 0xffff, rig.queue.nextUsed());
        assertEquals(66_000 & 0xffff, rig.driver.usedIdx());
        assertFalse(rig.queue.quarantined());
    }

    @Test
    @DisplayName("a new memory table: remap re-translates the rings; a table without them quarantines")
    void remapAfterMemoryTableChange() {
        int head = add();
        rig.driver.publishAvail();
        assertEquals(1, rig.pop());
        MemoryMap map = new MemoryMap(rig.mem);
        try (MemoryMap.Reader reader = map.register()) {
            // same memfd pages cannot be re-mapped from here, so the new table is a second view of
            // the same host memory: the queue must move to it and go on
            GuestMemory next = GuestMemory.builder()
                    .addHostMemory(0, 0x100000, rig.mem.region(0).hostAddress(), false).build();
            GuestMemory old = map.install(next);
            assertSame(rig.mem, old);
            assertEquals(0, rig.queue.remap(reader.current()));
            assertSame(next, rig.queue.memory());
            reader.quiescent();
            assertTrue(map.isQuiescent());
            rig.queue.addUsed(head, 1);
            rig.queue.publishUsed();
            assertEquals(head, rig.driver.reap());

            GuestMemory without = GuestMemory.builder().addHostMemory(Rig.REGION1, 0x100000,
                    rig.mem.region(1).hostAddress(), false).build();
            assertEquals(QueueError.DESCRIPTOR_TABLE_NOT_MAPPED.code(), rig.queue.remap(without));
            assertTrue(rig.queue.quarantined());
            assertEquals(List.of(QueueError.DESCRIPTOR_TABLE_NOT_MAPPED), rig.reported);
        }
    }

    @Test
    void toStringShowsTheState() {
        assertTrue(rig.queue.toString().contains("size 8"));
        rig.offer(9);
        rig.pop();
        assertTrue(rig.queue.toString().contains("QUARANTINED HEAD_OUT_OF_RANGE"), rig.queue.toString());
        assertTrue(QueueError.HEAD_OUT_OF_RANGE.toString().contains("2.7.5"));
        assertSame(QueueError.HEAD_OUT_OF_RANGE, QueueError.ofCode(QueueError.HEAD_OUT_OF_RANGE.code()));
    }
}
