package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;

/**
 * Review 11a: with ThreadingMode.DEDICATED the completion thread stores used.idx and only then
 * calls {@link InflightTracker#published}; the I/O thread meanwhile pops what the guest posts.
 * A guest that reuses a completed head at once (Linux's free list is LIFO, as the test driver's)
 * gets it popped again before published() of the batch that completed it, and vhost's
 * InflightRegion.published() then clears desc[head].inflight of the NEW request (see
 * vhost InflightRepopTest for what a crash then loses). The completion thread is held
 * inside published() here (as a preemption there would), so the interleaving is certain.
 */
class DedicatedRepopTest {
    @TempDir
    Path dir;

    static final class HoldingTracker implements InflightTracker {
        final Set<Integer> unpublished = ConcurrentHashMap.newKeySet();
        final List<String> violations = Collections.synchronizedList(new ArrayList<>());
        final CountDownLatch repopped = new CountDownLatch(1);
        volatile boolean hold = true;

        @Override
        public void popped(int head) {
            if (unpublished.contains(head)) {
                violations.add("head " + head + " popped again before published() of the batch that completed it");
                repopped.countDown();
            }
        }

        @Override
        public void used(int head) {
            unpublished.add(head);
        }

        @Override
        public void published(int usedIdx) {
            if (hold) {
                hold = false;
                try {
                    // A preempted completion thread: used.idx is out, the flags are not yet cleared.
                    repopped.await(3, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            unpublished.clear();
        }
    }

    @Test
    void aHeadIsNeverPoppedAgainBeforeThePublishOfItsCompletion() throws Exception {
        Tuning tuning = Tuning.builder().threadingMode(ThreadingMode.DEDICATED).waitStrategy(WaitStrategy.BLOCKING).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(tuning).build()) {
            HoldingTracker tracker = new HoldingTracker();
            rig.device.stopQueue(0);
            rig.device.setInflightTracker(0, tracker);
            rig.device.startQueue(0);
            long buf = rig.buffer(0, 2 * 4096);
            int first = rig.add(0, T_IN, 0, buf, 4096, true);
            rig.kick(0);
            assertEquals(first, rig.awaitUsed(0, 10_000), "the guest sees the completion (used.idx stored)");
            // The guest reuses the freed head at once.
            int second = rig.add(0, T_IN, 8, buf + 4096, 4096, true);
            assertEquals(first, second, "the driver's LIFO free list hands out the same head");
            rig.kick(0);
            assertEquals(second, rig.awaitUsed(0, 10_000));
            assertEquals(S_OK, rig.status(0, second));
            rig.device.stopQueue(0);
            assertTrue(tracker.violations.isEmpty(), tracker.violations.toString());
        }
    }
}
