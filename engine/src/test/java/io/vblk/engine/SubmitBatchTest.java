package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;

/**
 * {@link Tuning#submitBatch()} on a running device, over every back end: two queues sharing one
 * I/O thread offer whole rings at once, which the thread takes in rounds of at most the budget.
 * Every request completes exactly once with the right data, no pop exceeded the budget, and the
 * queues stop (drain) cleanly.
 */
class SubmitBatchTest {
    private static final int SIZE = 64;
    private static final int BUDGET = 7;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void wholeRingsInRoundsOfTheBudget(BackendKind kind) throws Exception {
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).queueThreads(0, 0).submitBatch(BUDGET).build();
        try (DeviceRig rig = DeviceRig.builder(dir, kind).imageBytes(8L << 20)
                .config(b -> b.numQueues(2).queueSize(SIZE)).tuning(tuning).build()) {
            long[] bufs = new long[2];
            for (int q = 0; q < 2; q++) {
                bufs[q] = rig.buffer(q, 4096L * SIZE);
            }
            // Writes of a pattern per queue and block, then reads of it back.
            for (int pass = 0; pass < 2; pass++) {
                int type = pass == 0 ? T_OUT : T_IN;
                for (int q = 0; q < 2; q++) {
                    for (int i = 0; i < SIZE; i++) {
                        long host = rig.host(bufs[q] + 4096L * i, 4096);
                        UnsafeApi.setMemory(host, 4096, pass == 0 ? (byte) (q * SIZE + i) : (byte) 0);
                        rig.add(q, type, (q * SIZE + i) * 8L, bufs[q] + 4096L * i, 4096, type == T_IN, true);
                    }
                }
                rig.kick(0);
                rig.kick(1);
                for (int q = 0; q < 2; q++) {
                    Set<Integer> heads = new HashSet<>();
                    for (int i = 0; i < SIZE; i++) {
                        int head = rig.awaitUsed(q, 20_000);
                        assertTrue(heads.add(head), kind + " queue " + q + ": head " + head + " completed twice");
                        assertEquals(S_OK, rig.status(q, head), kind + " queue " + q + " head " + head);
                    }
                    assertFalse(rig.device.isBroken(q), "queue " + q + ": " + rig.device.brokenReason(q));
                }
            }
            for (int q = 0; q < 2; q++) {
                for (int i = 0; i < SIZE; i++) {
                    long host = rig.host(bufs[q] + 4096L * i, 4096);
                    if (kind != BackendKind.NULL) {
                        assertEquals((byte) (q * SIZE + i), UnsafeApi.getByte(host + 4095), kind + " queue " + q + " block " + i);
                    }
                }
                QueueCounters c = rig.device.counters(q);
                assertEquals(2L * SIZE, c.get(QueueCounters.COMPLETIONS), "each request once");
                assertEquals(2L * SIZE, c.get(QueueCounters.REQUESTS));
                // Each pop took at most the budget: a queue needed at least SIZE / BUDGET pops a pass.
                assertTrue(c.get(QueueCounters.BATCHES) >= 2L * ((SIZE + BUDGET - 1) / BUDGET),
                        "queue " + q + ": " + c.get(QueueCounters.BATCHES) + " pops for " + 2 * SIZE + " requests");
                rig.device.stopQueue(q); // the drain returns: nothing in flight was lost
            }
        }
    }
}
