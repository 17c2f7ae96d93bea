package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import io.vblk.aio.BackendKind;
import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;

/**
 * A fault thrown out of the completion route while {@link WriteThrough} hands over the writes a
 * flush covered (a late guest-memory fault of one request) loses that request only: the others
 * it covered stay held and go to the route at the next {@link WriteThrough#afterPoll()} (rev13c:
 * the count was cleared before the loop, so every request after the faulting one was lost and
 * its guest waited until a drain gave it up).
 */
class WriteThroughRouteFaultTest {
    private static final long CAPACITY = 1 << 20;

    @Test
    void aFaultOutOfTheRouteLosesOnlyTheRequestItHit() throws Exception {
        BlkConfig config = BlkConfig.builder(CAPACITY).queueSize(8).numQueues(1).build();
        DeviceModel model = new DeviceModel(config);
        model.negotiate(config.offeredFeatures() & ~(1L << BlkFeatures.FLUSH));
        RequestPool pool = new RequestPool(8, 4);
        List<Integer> routed = new ArrayList<>();
        int[] faultOn = {1};
        CompletionSink route = (tag, result) -> {
            if ((int) tag == faultOn[0]) {
                faultOn[0] = -1;
                throw new IllegalStateException("a late guest-memory fault");
            }
            routed.add((int) tag);
        };
        try (RawDriver driver = new RawDriver(IoBackends.open(BackendKind.NULL, null, 64), CAPACITY, false, true)) {
            WriteThrough wt = new WriteThrough(model, driver, pool, route);
            for (int i = 0; i < 3; i++) {
                BlkRequest r = pool.claim();
                r.type = BlkRequestDescriptor.T_OUT;
                r.stage = BlkRequest.HANDED;
                r.pendingOps = 1;
                wt.complete(r.slot, 4096);
            }
            assertTrue(routed.isEmpty(), "written, not yet durable: held");
            assertTrue(wt.afterPoll(), "one flush for the three");
            driver.submit();
            assertThrows(IllegalStateException.class, () -> driver.poll(wt, 8), "the flush's completion meets the fault");
            assertEquals(List.of(0), routed, "the request before the fault went to the route");
            assertTrue(wt.holding(), "the one after it is still held, not lost");
            assertFalse(wt.afterPoll(), "nothing new to flush");
            assertEquals(List.of(0, 2), routed, "the next poll handed over the rest; only the faulting one is lost");
            assertFalse(wt.holding());
        }
    }
}
