package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.vring.QueueState;

/**
 * A stop answers an avail index that counts the requests queued by
 * {@link BlockDevice#resubmitOnStart} (vhost-user inflight recovery resumes at used.idx + k), so
 * it must run them all before it returns, even when the throttle holds the queue back or the
 * stop comes before the I/O thread's first round: a migration destination resumes at that
 * index and never sees them again (review 11a, finding 1).
 */
class ResubmitDrainTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @CsvSource({"SHARED, 0", "SHARED, 1", "DEDICATED, 0", "DEDICATED, 1"})
    void aStopRunsEveryQueuedResubmissionBeforeItAnswers(ThreadingMode mode, int iopsLimit) throws Exception {
        Tuning tuning = Tuning.builder().threadingMode(mode).iopsLimit(iopsLimit).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(tuning).build()) {
            long buf = rig.buffer(0, 4 * 4096);
            QueueState state = rig.device.stopQueue(0);
            int[] heads = new int[4];
            for (int i = 0; i < 4; i++) {
                heads[i] = rig.add(0, T_IN, i * 8L, buf + i * 4096L, 4096, true);
            }
            rig.driver(0).publishAvail();
            // A previous backend popped all four and completed none.
            rig.device.setQueueState(0, state.withNextAvail(state.nextAvail() + 4));
            rig.device.resubmitOnStart(0, heads);
            rig.device.startQueue(0);
            int answered = rig.device.stopQueue(0).nextAvail(); // at once, no round awaited
            assertEquals(state.nextAvail() + 4, answered);
            assertEquals(answered, rig.driver(0).usedIdx(), "requests behind the answered index completed");
            for (int head : heads) {
                assertEquals(S_OK, rig.status(0, head), "status of head " + head);
            }
        }
    }
}
