package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

import io.vblk.testkit.SplitQueueDriver;

/** Notification suppression both ways, with and without EVENT_IDX, and batched used publishing. */
class SplitQueueNotificationTest {
    private Rig rig;
    private long buf;

    private void open(boolean eventIdx) {
        rig = Rig.create(16, eventIdx, true);
        buf = rig.driver.allocate(4096, 64);
    }

    @AfterEach
    void close() {
        if (rig != null) {
            rig.close();
        }
    }

    private int add() {
        return rig.driver.addDirect(new long[] {buf, buf + 16}, new int[] {16, 1}, new boolean[] {false, true}, 2);
    }

    private void popAll(int expected) {
        for (int i = 0; i < expected; i++) {
            assertEquals(1, rig.pop());
        }
        assertEquals(0, rig.pop());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.10: without EVENT_IDX, used.flags NO_NOTIFY stops kicks while disabled")
    void noNotifyFlag() {
        open(false);
        add();
        assertTrue(rig.driver.publishAvail(), "flags 0: the driver must kick");
        rig.queue.disableNotifications();
        assertEquals(UsedRingDescriptor.F_NO_NOTIFY, rig.driver.usedFlags());
        add();
        assertFalse(rig.driver.publishAvail(), "NO_NOTIFY: no kick");
        popAll(2);
        assertFalse(rig.queue.enableNotifications());
        assertEquals(0, rig.driver.usedFlags());
        add();
        assertTrue(rig.driver.publishAvail());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.10: with EVENT_IDX, the driver kicks only when avail.idx passes avail_event")
    void availEvent() {
        open(true);
        add();
        assertTrue(rig.driver.publishAvail(), "avail_event 0 (fresh ring, kicks wanted): kick at the first entry");
        rig.queue.disableNotifications();
        assertEquals(0, rig.driver.usedFlags(), "with EVENT_IDX the device leaves flags at 0 (2.7.10.2)");
        assertEquals(0xffff, rig.driver.availEvent(), "parked one behind next_avail 0: out of the driver's reach");
        add();
        add();
        assertFalse(rig.driver.publishAvail(), "no kick while the device is busy");
        popAll(3);
        assertFalse(rig.queue.enableNotifications());
        assertEquals(3, rig.driver.availEvent(), "kick me when entry 3 is published");
        add();
        add();
        assertTrue(rig.driver.publishAvail(), "3 in [3, 5): kick");
        add();
        assertFalse(rig.driver.publishAvail(), "5 already passed 3: no second kick for the same event");
    }

    @Test
    @DisplayName("no lost kick: disable -> pop -> (driver adds, no kick) -> enable re-checks avail.idx and says 'more'")
    void enableRechecksAvailIndex() {
        for (boolean eventIdx : new boolean[] {false, true}) {
            open(eventIdx);
            add();
            assertTrue(rig.driver.publishAvail());
            rig.queue.disableNotifications();
            popAll(1);
            add(); // arrives between the last pop and enable: the driver sees notifications off
            assertFalse(rig.driver.publishAvail(), "suppressed (eventIdx " + eventIdx + ")");
            assertTrue(rig.queue.enableNotifications(), "enable must report the buffer, or it is lost");
            rig.queue.disableNotifications();
            popAll(1);
            assertFalse(rig.queue.enableNotifications());
            rig.close();
        }
        rig = Rig.create(2); // for close()
    }

    @Test
    @DisplayName("virtio 1.2 2.7.7: without EVENT_IDX, avail.flags NO_INTERRUPT suppresses interrupts")
    void noInterruptFlag() {
        open(false);
        int head = add();
        rig.driver.publishAvail();
        popAll(1);
        rig.queue.addUsed(head, 1);
        assertTrue(rig.queue.publishUsed(), "first publish after set-up always notifies");
        assertEquals(head, rig.driver.reap());
        rig.driver.disableInterrupts();
        for (int i = 0; i < 2; i++) {
            head = add();
            rig.driver.publishAvail();
            popAll(1);
            rig.queue.addUsed(head, 1);
            assertFalse(rig.queue.publishUsed(), "NO_INTERRUPT");
            assertEquals(head, rig.driver.reap());
        }
        assertFalse(rig.driver.enableInterrupts());
        head = add();
        rig.driver.publishAvail();
        popAll(1);
        rig.queue.addUsed(head, 1);
        assertTrue(rig.queue.publishUsed(), "flags 0: the device must notify (2.7.7.2)");
    }

    @Test
    @DisplayName("virtio 1.2 2.7.7: with EVENT_IDX, notify when used.idx passes used_event (even if NO_INTERRUPT is set)")
    void usedEvent() {
        open(true);
        int[] heads = new int[6];
        for (int i = 0; i < 6; i++) {
            heads[i] = add();
        }
        rig.driver.publishAvail();
        popAll(6);
        rig.queue.addUsed(heads[0], 1);
        assertTrue(rig.queue.publishUsed(), "first publish after set-up");
        rig.tamper.writeUsedEvent(3); // interrupt me when entry 3 is written
        rig.tamper.writeAvailFlags(AvailRingDescriptor.F_NO_INTERRUPT); // must be ignored (2.7.7.2)
        rig.queue.addUsed(heads[1], 1);
        assertFalse(rig.queue.publishUsed(), "used.idx 1 -> 2 does not pass 3");
        rig.queue.addUsed(heads[2], 1);
        rig.queue.addUsed(heads[3], 1);
        assertTrue(rig.queue.publishUsed(), "2 -> 4 passes entry 3");
        rig.queue.addUsed(heads[4], 1);
        assertFalse(rig.queue.publishUsed(), "4 -> 5: already passed");
    }

    @Test
    @DisplayName("virtio 1.2 2.7.8.2: used elements are written first and published with ONE used.idx store per batch")
    void usedIndexPublishedOncePerBatch() {
        open(false);
        int[] heads = new int[4];
        for (int i = 0; i < 4; i++) {
            heads[i] = add();
        }
        rig.driver.publishAvail();
        popAll(4);
        rig.queue.addUsed(heads[2], 7);
        rig.queue.addUsed(heads[0], 8);
        rig.queue.addUsed(heads[3], 9);
        assertEquals(heads[2], rig.driver.usedId(0), "element written");
        assertEquals(0, rig.driver.usedIdx(), "but not visible until the publish");
        assertEquals(SplitQueueDriver.NONE, rig.driver.reap());
        assertEquals(3, rig.queue.nextUsed());
        rig.queue.publishUsed();
        assertEquals(3, rig.driver.usedIdx(), "one store for three elements");
        assertFalse(rig.queue.publishUsed(), "nothing new: no store, no notification");
        assertEquals(heads[2], rig.driver.reap());
        assertEquals(7, rig.driver.lastUsedLength());
        assertEquals(heads[0], rig.driver.reap());
        assertEquals(heads[3], rig.driver.reap());
        assertEquals(SplitQueueDriver.NONE, rig.driver.reap());
    }

    @Test
    @DisplayName("virtio 1.2 2.7.7/2.7.10: both sides tolerate spurious notifications")
    void spuriousNotifications() {
        open(true);
        assertFalse(rig.queue.enableNotifications());
        assertEquals(0, rig.pop(), "a kick with nothing published");
        assertFalse(rig.driver.enableInterrupts());
        assertEquals(SplitQueueDriver.NONE, rig.driver.reap(), "an interrupt with nothing used");
    }
}
