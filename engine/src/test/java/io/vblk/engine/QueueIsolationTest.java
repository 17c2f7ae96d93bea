package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.RingTamperer;

/** A corrupt ring quarantines its own queue only (virtio 1.2 2.7 rules; design: hostile guest). */
class QueueIsolationTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void corruptAvailIndexQuarantinesOnlyThatQueue(BackendKind kind) throws Exception {
        CopyOnWriteArrayList<String> broken = new CopyOnWriteArrayList<>();
        DeviceListener listener = new DeviceListener() {
            @Override
            public void queueBroken(int queue, String reason) {
                broken.add(queue + ": " + reason);
            }
        };
        try (DeviceRig rig = DeviceRig.builder(dir, kind).config(b -> b.numQueues(2)).listener(listener).build()) {
            long buf0 = rig.buffer(0, 4096);
            long buf1 = rig.buffer(1, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf0, 4096, true));
            // 2.7.13.3: avail.idx may run at most queue-size entries ahead of the device.
            RingTamperer.of(rig.driver(0)).writeAvailIdx(rig.driver(0).availIdx() + rig.driver(0).size() + 1);
            rig.kicks[0].signal();
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (!rig.device.isBroken(0) && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            assertTrue(rig.device.isBroken(0), "queue 0 quarantined");
            assertNotNull(rig.device.brokenReason(0));
            assertEquals(1, rig.device.counters(0).get(QueueCounters.QUARANTINES));
            assertEquals(1, broken.size(), broken.toString());
            assertTrue(broken.get(0).startsWith("0: "), broken.toString());

            for (int i = 0; i < 100; i++) {
                assertEquals(S_OK, rig.roundTrip(1, T_IN, i, buf1, 4096, true));
            }
            assertFalse(rig.device.isBroken(1));
            // Sticky until reset, and stop still returns.
            rig.device.stopQueue(0);
            assertTrue(rig.device.isBroken(0));
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "NULL"})
    void descriptorLoopQuarantinesTheQueueAndResetRevivesIt(BackendKind kind) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).build()) {
            var d = rig.driver(0);
            long buf = rig.buffer(0, 4096);
            // 2.7.5.3.1: a chain longer than the queue size is a loop.
            RingTamperer.of(d).writeDescriptor(0, buf, 16, 1, 1);
            RingTamperer.of(d).writeDescriptor(1, buf, 16, 1, 0);
            RingTamperer.of(d).offerRaw(0);
            d.publishAvail();
            rig.kicks[0].signal();
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (!rig.device.isBroken(0) && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            assertTrue(rig.device.isBroken(0));
            rig.device.reset();
            assertFalse(rig.device.isBroken(0));
        }
    }
}
