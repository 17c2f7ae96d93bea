package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.RingTamperer;

/**
 * Queues at full depth and beyond (issue 10, bug 1): every slot of an I/O thread's pool in flight
 * at once, on queues that share the thread, and a guest that re-offers heads it has in flight.
 * A whole ring is offered before one kick, so one round pops all of it before anything completes.
 */
class FullDepthTest {
    private static final int SIZE = 256;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = ThreadingMode.class)
    void everySlotInFlightOnTwoQueuesSharingAThread(ThreadingMode mode) throws Exception {
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).queueThreads(0, 0).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(16L << 20)
                .config(b -> b.numQueues(2).queueSize(SIZE)).tuning(tuning).build()) {
            for (int round = 0; round < 3; round++) {
                int[][] heads = new int[2][SIZE];
                for (int q = 0; q < 2; q++) {
                    long buf = rig.buffer(q, 512L * SIZE);
                    for (int i = 0; i < SIZE; i++) {
                        heads[q][i] = rig.add(q, T_IN, i, buf + 512L * i, 512, true, true);
                    }
                }
                rig.kick(0);
                rig.kick(1);
                for (int q = 0; q < 2; q++) {
                    for (int i = 0; i < SIZE; i++) {
                        int head = rig.awaitUsed(q, 20_000);
                        assertEquals(S_OK, rig.status(q, head), "queue " + q + " head " + head);
                    }
                    assertFalse(rig.device.isBroken(q), "queue " + q + ": " + rig.device.brokenReason(q));
                }
            }
            for (int q = 0; q < 2; q++) {
                assertEquals(3L * SIZE, rig.device.counters(q).get(QueueCounters.COMPLETIONS));
                rig.device.stopQueue(q); // returns: nothing leaked
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = ThreadingMode.class)
    void reofferedInFlightHeadsNeverLoseASlotNorTouchTheOtherQueue(ThreadingMode mode) throws Exception {
        // A pool smaller than what the guest offers: popping stops at the pool's end and resumes.
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).queueThreads(0, 0)
                .backendDepth(16).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(16L << 20)
                .config(b -> b.numQueues(2).queueSize(64)).tuning(tuning).build()) {
            var d = rig.driver(0);
            long buf = rig.buffer(0, 512L * 32);
            int[] heads = new int[32];
            for (int i = 0; i < 32; i++) {
                heads[i] = rig.add(0, T_IN, i, buf + 512L * i, 512, true, true);
            }
            // Every head again: 64 avail entries for 32 chains, each in flight twice.
            for (int i = 0; i < 32; i++) {
                RingTamperer.of(d).offerRaw(heads[i]);
            }
            RingTamperer.of(d).writeAvailIdx(d.availIdx());
            rig.kicks[0].signal();
            long deadline = System.nanoTime() + 20_000_000_000L;
            while ((d.usedIdx() & 0xffff) != 64 && !rig.device.isBroken(0) && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            assertEquals(64, d.usedIdx() & 0xffff, "every offered entry used once; broken: " + rig.device.brokenReason(0));
            assertEquals(64L, rig.device.counters(0).get(QueueCounters.COMPLETIONS));
            rig.device.stopQueue(0); // in-flight count exact: the drain returns
            // The queue sharing the thread never noticed.
            long other = rig.buffer(1, 4096);
            assertEquals(S_OK, rig.roundTrip(1, T_IN, 0, other, 4096, true));
            assertFalse(rig.device.isBroken(1));
        }
    }
}
