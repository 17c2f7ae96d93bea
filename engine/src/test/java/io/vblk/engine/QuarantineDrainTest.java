package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.hostmem.GuestMemory;
import io.vblk.testkit.GatedBackend;
import io.vblk.testkit.RingTamperer;

/**
 * Issue 10, bug 4: {@link BlockDevice#setMemory} lets the caller unmap the old table on return,
 * so it must wait for reads still in flight on quarantined queues too; before the fix such a
 * read completed later into the unmapped table (SIGSEGV in the completion path).
 */
class QuarantineDrainTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(ThreadingMode.class)
    void setMemoryWaitsForReadsInFlightOnAQuarantinedQueue(ThreadingMode mode) throws Exception {
        GatedBackend[] backend = new GatedBackend[1];
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(tuning)
                .backends(f -> depth -> backend[0] = new GatedBackend(f.open(depth), false)).build();
             GuestMemory next = GuestMemory.builder().addMemfd(0, DeviceRig.QUEUE_AREA + DeviceRig.BUFFERS).build()) {
            long buf = rig.buffer(0, 4096);
            int head = rig.add(0, T_IN, 0, buf, 4096, true);
            rig.kick(0);
            awaitCounter(rig, QueueCounters.REQUESTS, 1);
            // The guest corrupts its ring while the read is in flight: the queue is quarantined.
            RingTamperer.of(rig.driver(0)).offerRaw(0xfff0);
            RingTamperer.of(rig.driver(0)).writeAvailIdx(rig.driver(0).availIdx());
            rig.kicks[0].signal();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (!rig.device.isBroken(0) && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            assertTrue(rig.device.isBroken(0));

            CompletableFuture<Void> swap = CompletableFuture.runAsync(() -> rig.device.setMemory(next));
            Thread.sleep(200);
            boolean returnedEarly = swap.isDone();
            backend[0].open(); // before any assertion: the rig's close drains
            assertFalse(returnedEarly, "setMemory returned with a read in flight into the old table");
            swap.get(10, TimeUnit.SECONDS);
            // The read finished before setMemory returned, into the old table, which is still mapped.
            assertEquals(1L, rig.device.counters(0).get(QueueCounters.COMPLETIONS));
            assertEquals(S_OK, rig.status(0, head));
            assertTrue(rig.device.isBroken(0), "quarantine outlives a memory-table change");
        }
    }

    static void awaitCounter(DeviceRig rig, int counter, long value) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (rig.device.counters(0).get(counter) < value) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("counter " + counter + " never reached " + value + ": " + rig.device.counters(0));
            }
            Thread.sleep(1);
        }
    }
}
