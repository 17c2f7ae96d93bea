package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.vring.QueueState;

/**
 * The hooks crash recovery stands on: every popped request is reported before its I/O and
 * reported used before its used element, each batch's publish follows; and requests handed to
 * {@link BlockDevice#resubmitOnStart} are executed from their heads without consuming avail
 * entries again.
 */
class InflightRecoveryTest {
    @TempDir
    Path dir;

    /** Records the calls, checking their order per head. */
    static final class Recorder implements InflightTracker {
        final Set<Integer> inflight = new HashSet<>();
        final List<String> errors = new ArrayList<>();
        int lastPublished = -1;
        int batchUsed;
        long popped;

        @Override
        public synchronized void popped(int head) {
            if (!inflight.add(head)) {
                errors.add("head " + head + " popped twice");
            }
            popped++;
        }

        @Override
        public synchronized void used(int head) {
            if (!inflight.remove(head)) {
                errors.add("head " + head + " used but not in flight");
            }
            batchUsed++;
        }

        @Override
        public synchronized void published(int usedIdx) {
            if (lastPublished >= 0 && ((lastPublished + batchUsed) & 0xffff) != usedIdx) {
                errors.add("used_idx " + usedIdx + " after " + lastPublished + " + " + batchUsed);
            }
            lastPublished = usedIdx;
            batchUsed = 0;
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "THREADS", "NULL"})
    void trackerSeesEveryRequestInOrder(BackendKind kind) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).build()) {
            Recorder recorder = new Recorder();
            rig.device.stopQueue(0);
            rig.device.setInflightTracker(0, recorder);
            rig.device.startQueue(0);
            long buf = rig.buffer(0, 32 * 4096);
            for (int round = 0; round < 50; round++) {
                for (int i = 0; i < 32; i++) {
                    rig.add(0, (i & 1) == 0 ? T_IN : T_OUT, i * 8L, buf + i * 4096L, 4096, (i & 1) == 0);
                }
                rig.kick(0);
                for (int i = 0; i < 32; i++) {
                    assertEquals(S_OK, rig.status(0, rig.awaitUsed(0, 10_000)));
                }
            }
            rig.device.stopQueue(0);
            synchronized (recorder) {
                assertTrue(recorder.errors.isEmpty(), recorder.errors.toString());
                assertTrue(recorder.inflight.isEmpty(), "in flight after drain: " + recorder.inflight);
                assertEquals(50 * 32, recorder.popped);
                assertEquals(50 * 32 & 0xffff, recorder.lastPublished);
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "THREADS"})
    void resubmittedHeadsRunWithoutConsumingAvailAgain(BackendKind kind) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).build()) {
            long buf = rig.buffer(0, 4 * 4096);
            QueueState state = rig.device.stopQueue(0);
            int[] heads = new int[4];
            for (int i = 0; i < 4; i++) {
                heads[i] = rig.add(0, T_IN, i * 8L, buf + i * 4096L, 4096, true);
            }
            rig.driver(0).publishAvail();
            // As after a crash: the old backend had popped all four (next_avail = used.idx + 4)
            // and completed none; the new one must run them from the inflight record alone.
            rig.device.setQueueState(0, state.withNextAvail(state.nextAvail() + 4));
            rig.device.resubmitOnStart(0, new int[] {heads[2], heads[0], heads[3], heads[1]});
            rig.device.startQueue(0);
            Set<Integer> done = new HashSet<>();
            for (int i = 0; i < 4; i++) {
                int head = rig.awaitUsed(0, 10_000);
                assertEquals(S_OK, rig.status(0, head));
                assertTrue(done.add(head), "head " + head + " completed twice");
            }
            assertEquals(4, rig.device.counters(0).get(QueueCounters.REQUESTS));
            assertEquals(state.nextAvail() + 4, rig.device.stopQueue(0).nextAvail(), "avail entries were not popped again");
        }
    }
}
