package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import io.vblk.sys.Mapping;

/**
 * Review 11a: in dedicated threading mode {@link InflightRegion#popped} runs on the I/O thread and
 * {@link InflightRegion#published} on the completion thread. The completion thread stores
 * used.idx (CompletionPath.endOfBatch: publishUsed) BEFORE published() clears the batch's flags,
 * so the guest can see head X completed, post X again, and the I/O thread can pop the new X
 * (flag := 1) before the completion thread's published() clears "the batch's" flag of X. The
 * new request X then runs with inflight = 0: a backend that dies now leaves a region from which
 * the next backend does not resubmit it (a lost write, a guest waiting for ever).
 *
 * <p>The interleaving below is exactly the one those two threads allow; the class comment of
 * InflightRegion ("the head is popped again only after the guest saw it completed") assumes the
 * guest sees the completion only after published(), which is not so.
 */
class InflightRepopTest {
    static final int SIZE = 8;
    private final Mapping memory = Mapping.anonymous(4096, true);
    private final InflightRegion region = new InflightRegion(memory.address(), SIZE);

    @AfterEach
    void unmap() {
        memory.close();
    }

    @Test
    void aHeadRepoppedBetweenTheUsedIdxStoreAndTheFlagClearingStaysMarkedInFlight() {
        InflightRecovery.Result first = InflightRecovery.recover(region, SIZE, 0, 0, 0);
        region.resume(first.nextCounter(), first.lastBatchHead());
        int x = 3;
        // I/O thread: pop X (avail index 0).
        region.popped(x);
        // Completion thread: X completes; used element written, then used.idx := 1 (publishUsed)...
        region.used(x);
        // ... the guest sees used.idx 1, reposts X at avail index 1 and kicks; the I/O thread pops it.
        region.popped(x);
        // Completion thread, continuing its endOfBatch: published(1) clears the batch's flags.
        region.published(1);
        // The new X is in flight (popped, never completed): the region must say so.
        assertEquals(1, region.inflight(x), "the re-popped request X runs with desc[X].inflight = 0");

        // The backend dies now. used.idx = 1, avail.idx = 2: the next backend must resubmit X.
        InflightRegion next = new InflightRegion(memory.address(), SIZE);
        InflightRecovery.Result r = InflightRecovery.recover(next, SIZE, 1, 2, 1);
        assertArrayEquals(new int[] {x}, r.heads(), "the request in flight at the crash is resubmitted");
        assertEquals(2, r.nextAvail());
    }
}
