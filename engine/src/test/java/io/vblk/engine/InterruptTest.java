package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Random;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.RingTamperer;

/**
 * Interrupts: at most one per completion batch, suppressed when the driver asks (NO_INTERRUPT,
 * or EVENT_IDX's used_event), and never lost: a driver that enables interrupts and sleeps on the
 * eventfd is always woken (virtio 1.2 2.7.7, 2.7.10).
 */
class InterruptTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @CsvSource({"NULL,true", "NULL,false", "IO_URING,true", "IO_URING,false", "LINUX_AIO,true", "THREADS,false"})
    void batchesCoalesceInterruptsAndNoWakeUpIsLost(BackendKind kind, boolean eventIdx) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).eventIdx(eventIdx).build()) {
            long buf = rig.buffer(0, 64 * 4096);
            QueueCounters c = rig.device.counters(0);
            Random random = new Random(7);
            int requests = 0;
            for (int round = 0; round < 300; round++) {
                int batch = 1 + random.nextInt(64);
                for (int i = 0; i < batch; i++) {
                    rig.add(0, T_IN, i * 8L, buf + i * 4096L, 4096, true);
                }
                rig.kick(0);
                for (int i = 0; i < batch; i++) {
                    int head = rig.awaitUsed(0, 10_000); // sleeps on the interrupt: fails if a wake-up is lost
                    assertEquals(S_OK, rig.status(0, head));
                }
                requests += batch;
            }
            awaitQuiet(c, requests);
            long interrupts = c.get(QueueCounters.INTERRUPTS);
            long publishes = interrupts + c.get(QueueCounters.INTERRUPTS_SUPPRESSED);
            assertTrue(publishes < requests, "used.idx published per batch, not per request: " + publishes + " for " + requests);
            assertTrue(interrupts < requests, "interrupts coalesced: " + interrupts + " for " + requests);
        }
    }

    /**
     * EVENT_IDX (2.7.7.2): a driver that sets used_event to the last request of its batch gets
     * exactly one interrupt for the batch, and only once every request of it is used.
     */
    @ParameterizedTest
    @CsvSource({"NULL", "IO_URING", "LINUX_AIO", "THREADS"})
    void eventIdxInterruptsOncePerBatchWhenUsedEventIsPassed(BackendKind kind) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).eventIdx(true).build()) {
            long buf = rig.buffer(0, 64 * 4096);
            var d = rig.driver(0);
            Random random = new Random(11);
            // The first publish after start may interrupt regardless (allowed: 2.7.7); take it here.
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            Thread.sleep(5);
            drainInterrupt(rig);
            for (int round = 0; round < 200; round++) {
                int batch = 1 + random.nextInt(64);
                int first = d.lastUsed();
                RingTamperer.of(d).writeUsedEvent(first + batch - 1);
                for (int i = 0; i < batch; i++) {
                    rig.add(0, T_IN, i * 8L, buf + i * 4096L, 4096, true);
                }
                rig.kick(0);
                assertEquals(1, rig.interrupts[0].await(10_000), "interrupt for the batch");
                assertEquals((first + batch) & 0xffff, d.usedIdx(), "interrupted only after the whole batch was used");
                for (int i = 0; i < batch; i++) {
                    int head = d.reap();
                    assertTrue(head >= 0);
                    assertEquals(S_OK, rig.status(0, head));
                }
                Thread.sleep(round % 20 == 0 ? 2 : 0);
                assertEquals(1, rig.interrupts[0].read(), "exactly one interrupt for the batch");
            }
        }
    }

    private static void drainInterrupt(DeviceRig rig) {
        rig.interrupts[0].read();
    }

    private static void awaitQuiet(QueueCounters c, long requests) throws InterruptedException {
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (c.get(QueueCounters.COMPLETIONS) < requests && System.nanoTime() < deadline) {
            Thread.sleep(1);
        }
        Thread.sleep(20); // let the last batch's publish and interrupt land in the counters
    }

    @ParameterizedTest
    @CsvSource({"NULL,true", "NULL,false"})
    void driverThatPollsIsNotInterrupted(BackendKind kind, boolean eventIdx) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).eventIdx(eventIdx).build()) {
            long buf = rig.buffer(0, 4096);
            rig.driver(0).disableInterrupts();
            QueueCounters c = rig.device.counters(0);
            for (int i = 0; i < 200; i++) {
                rig.add(0, T_IN, 0, buf, 4096, true);
                rig.kick(0);
                long deadline = System.nanoTime() + 10_000_000_000L;
                int head;
                while ((head = rig.driver(0).reap()) < 0) {
                    assertTrue(System.nanoTime() < deadline, "completion never arrived");
                    Thread.onSpinWait();
                }
                assertEquals(S_OK, rig.status(0, head));
            }
            // The first publish after start may interrupt (spurious interrupts are allowed, 2.7.7).
            assertTrue(c.get(QueueCounters.INTERRUPTS) <= 1, "interrupts while the driver polls: " + c.get(QueueCounters.INTERRUPTS));
            assertTrue(c.get(QueueCounters.INTERRUPTS_SUPPRESSED) >= 199);
        }
    }
}
