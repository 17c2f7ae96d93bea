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
 * A guest-memory fault the JVM delivers late (GuestFaults) at the return from the back end's
 * prepare (a method return is where compiled code polls for it): the back end has queued the
 * operation, but the request's stage still says "claimed". The handler gave every claimed
 * request back to the pool, so the slot was free while its operation ran. Two queues on one
 * I/O thread share the pool: queue 1's next request claimed that very slot (the free list is a
 * stack), and queue 0's operation, completing, finished queue 1's request before its own I/O
 * had run; then queue 1's completed it again: a used element pushed twice for one head (and a
 * read reported done before its data arrived). A request that may have reached the back end
 * must stay counted and held until its completion or the drain's give-up. The fault is thrown
 * through {@link FaultPoints#HANDING}.
 */
class HandedOnAttackTest {
    private static final long AREA = 4L << 20;
    private static final int SIZE = 16;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @Test
    void aRequestTheBackEndMayHoldIsNeverGivenToAnotherQueue() throws Exception {
        int fd = Memfd.create("handed", 2 * AREA);
        EventFd kick0 = EventFd.create(true);
        EventFd kick1 = EventFd.create(true);
        EventFd irq0 = EventFd.create(true);
        EventFd irq1 = EventFd.create(true);
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             GuestMemory memory = GuestMemory.builder().addRegion(0, 2 * AREA, fd, 0, 0, false).build()) {
            BlkConfig config = BlkConfig.builder(4L << 20).numQueues(2).queueSize(SIZE).build();
            Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).queueThreads(0, 0).build();
            BlockDevice device = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image)).memory(memory)
                    .tuning(tuning).name("handed").build();
            try {
                device.negotiate(config.offeredFeatures() & ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX));
                SplitQueueDriver q0 = SplitQueueDriver.builder(memory).size(SIZE).eventIdx(false).area(0, AREA).build();
                SplitQueueDriver q1 = SplitQueueDriver.builder(memory).size(SIZE).eventIdx(false).area(AREA, AREA).build();
                device.configureQueue(0, SIZE, q0.descGpa(), q0.availGpa(), q0.usedGpa());
                device.configureQueue(1, SIZE, q1.descGpa(), q1.availGpa(), q1.usedGpa());
                device.setKick(0, kick0);
                device.setKick(1, kick1);
                device.setInterrupt(0, Interrupt.of(irq0));
                device.setInterrupt(1, Interrupt.of(irq1));
                device.start();
                assertEquals(S_OK, roundTrip(q0, kick0, irq0));
                assertEquals(S_OK, roundTrip(q1, kick1, irq1));
                // Both queues have a request when the thread wakes: queue 0's meets the fault
                // after its back end queued it; queue 1's is popped in the same round.
                FaultPoints.arm(FaultPoints.HANDING);
                add(q1);
                q1.publishAvail();
                add(q0);
                q0.publishAvail();
                kick0.signal();
                kick1.signal();
                assertTrue(q1.awaitUsed(irq1, 10_000) >= 0, "queue 1's request completed");
                assertTrue(FaultPoints.fired());
                assertTrue(device.isBroken(0), "queue 0 quarantined where the fault landed");
                // Drain both; then queue 1 must have exactly its one used element more.
                CompletableFuture.supplyAsync(() -> device.stopQueue(0), r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
                CompletableFuture.supplyAsync(() -> device.stopQueue(1), r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
                assertEquals(2, q1.usedIdx(), "queue 1: one used element per request (its warm-up and this one)");
                assertEquals(SplitQueueDriver.NONE, q1.reap(), "nothing more in queue 1's used ring");
                java.lang.reflect.Field threads = BlockDevice.class.getDeclaredField("threadOfQueue");
                threads.setAccessible(true);
                IoThread t = ((IoThread[]) threads.get(device))[0];
                RequestPool pool = t.dispatcherPool();
                assertEquals(pool.size(), pool.available(), "every request slot back once both queues drained");
                assertEquals(t.backend().depth(), t.backend().freeSlots(), "every back-end slot back");
            } finally {
                CompletableFuture.runAsync(device::close, r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
            }
        } finally {
            Native.libc().close(fd);
            kick0.close();
            kick1.close();
            irq0.close();
            irq1.close();
        }
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
