package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

class EventIndexTest {
    @Test
    @DisplayName("virtio 1.2 2.7.7 note: used_event 0 notifies when entry 0 is written, and again when idx wraps to it")
    void eventZeroAcrossTheWrap() {
        assertTrue(EventIndex.needEvent(0, 1, 0));
        assertFalse(EventIndex.needEvent(0, 2, 1));
        assertFalse(EventIndex.needEvent(0, 0, 65535), "entry 65535 written, not entry 0");
        assertTrue(EventIndex.needEvent(0, 1, 65535), "entries 65535 and 0 (after the wrap) written");
        assertTrue(EventIndex.needEvent(65535, 2, 65534), "a window across the wrap");
        assertFalse(EventIndex.needEvent(5, 5, 5), "nothing published");
        assertTrue(EventIndex.needEvent(7, 40, 2), "a batch of 38 entries that contains 7");
    }

    @Test
    @DisplayName("needEvent(e, new, old) is exactly 'entry e is one of old, old+1, ..., new-1' (mod 2^16)")
    void agreesWithItsDefinition() {
        int[] olds = {0, 1, 100, 32767, 32768, 65000, 65535};
        for (int old : olds) {
            for (int count = 0; count <= 300; count += 7) {
                int now = (old + count) & 0xffff;
                for (int e = 0; e < 65536; e += 97) {
                    boolean inWindow = ((e - old) & 0xffff) < count;
                    assertEquals(inWindow, EventIndex.needEvent(e, now, old), "e " + e + " old " + old + " new " + now);
                }
            }
        }
    }
}
