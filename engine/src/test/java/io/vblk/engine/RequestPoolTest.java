package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.Set;

import org.junit.jupiter.api.Test;

/** Every slot of the pool can be in flight at once (issue 10, bug 1: half the pool was null). */
class RequestPoolTest {
    @Test
    void everySlotCanBeClaimedAndIsDistinct() {
        for (int size : new int[] {1, 2, 3, 128, 129, 256, 4096}) {
            RequestPool pool = new RequestPool(size, 4);
            Set<Integer> seen = new HashSet<>();
            for (int i = 0; i < size; i++) {
                BlkRequest r = pool.claim();
                assertNotNull(r, "claim " + i + " of " + size);
                assertTrue(seen.add(r.slot), "slot " + r.slot + " claimed twice");
                assertEquals(r, pool.get(r.slot));
            }
            assertNull(pool.claim(), "a full pool has no slot left");
            pool.release(pool.get(size - 1));
            assertEquals(size - 1, pool.claim().slot);
        }
    }
}
