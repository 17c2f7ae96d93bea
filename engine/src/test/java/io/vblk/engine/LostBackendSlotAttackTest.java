package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A late guest-memory fault (GuestFaults) that lands inside the back end's prepare, after the
 * request took a back-end slot and before that slot is queued anywhere: the queue is
 * quarantined (a request being handed on cannot be undone exactly), the request slot is given
 * back, but the back end's slot is in no list. Before the fix the drain reclaimed lost back-end
 * slots only when it gave requests up, which it does not here (none is in flight), so every
 * such fault cost the device one back-end slot for good, across resets; an attacker who can
 * repeat late faults on a shared thread (shrink, reset, shrink) drains a victim's back end until
 * it pops nothing (a hang). The fault is thrown through {@link FaultPoints#PREPARE_TAKEN}.
 */
class LostBackendSlotAttackTest {
    private static final long AREA = 4L << 20;
    private static final int SIZE = 16;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @Test
    void aBackEndSlotLostInPrepareComesBackAtTheDrain() throws Exception {
        int fd = Memfd.create("prepare", 2 * AREA);
        EventFd kick = EventFd.create(true);
        EventFd irq = EventFd.create(true);
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             GuestMemory memory = GuestMemory.builder().addRegion(0, 2 * AREA, fd, 0, 0, false).build()) {
            BlkConfig config = BlkConfig.builder(4L << 20).numQueues(1).queueSize(SIZE).build();
            Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build();
            BlockDevice device = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image)).memory(memory)
                    .tuning(tuning).name("prepare").build();
            try {
                device.negotiate(config.offeredFeatures() & ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX));
                SplitQueueDriver q = SplitQueueDriver.builder(memory).size(SIZE).eventIdx(false).area(0, AREA).build();
                device.configureQueue(0, SIZE, q.descGpa(), q.availGpa(), q.usedGpa());
                device.setKick(0, kick);
                device.setInterrupt(0, Interrupt.of(irq));
                device.start();
                assertEquals(S_OK, roundTrip(q, kick, irq));
                IoThread t = thread(device);
                int depth = t.backend().depth();
                for (int round = 0; round < 3; round++) {
                    FaultPoints.arm(FaultPoints.PREPARE_TAKEN);
                    add(q);
                    q.publishAvail();
                    kick.signal();
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                    while (!device.isBroken(0)) {
                        assertTrue(System.nanoTime() < deadline, "never quarantined");
                        Thread.sleep(1);
                    }
                    CompletableFuture.supplyAsync(() -> device.stopQueue(0), r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
                    assertEquals(depth, t.backend().freeSlots(), "round " + round + ": the back end's slot taken in"
                            + " prepare came back with the drain");
                    device.clearQuarantine(0);
                    q.initialise();
                    device.configureQueue(0, SIZE, q.descGpa(), q.availGpa(), q.usedGpa());
                    device.startQueue(0);
                    assertEquals(S_OK, roundTrip(q, kick, irq));
                }
            } finally {
                CompletableFuture.runAsync(device::close, r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
            }
        } finally {
            Native.libc().close(fd);
            kick.close();
            irq.close();
        }
    }

    private static IoThread thread(BlockDevice device) throws ReflectiveOperationException {
        java.lang.reflect.Field threads = BlockDevice.class.getDeclaredField("threadOfQueue");
        threads.setAccessible(true);
        return ((IoThread[]) threads.get(device))[0];
    }

    private static long lastStatus;

    private static int add(SplitQueueDriver q) {
        long header = q.allocate(16, 16);
        long data = q.allocate(4096, 4096);
        long status = q.allocate(1, 1);
        long h = q.hostAddress(header, 16);
        UnsafeApi.putInt(h, T_IN);
        UnsafeApi.putInt(h + 4, 0);
        UnsafeApi.putLong(h + 8, 16);
        UnsafeApi.putByte(q.hostAddress(status, 1), (byte) 0x7f);
        lastStatus = status;
        return q.addDirect(new long[] {header, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 3);
    }

    private static byte roundTrip(SplitQueueDriver q, EventFd kick, EventFd irq) {
        int head = add(q);
        long status = lastStatus;
        q.publishAvail();
        kick.signal();
        assertEquals(head, q.awaitUsed(irq, 10_000));
        return UnsafeApi.getByte(q.hostAddress(status, 1));
    }
}
