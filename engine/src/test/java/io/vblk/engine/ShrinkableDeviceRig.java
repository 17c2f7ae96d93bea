package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.agrona.UnsafeApi;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A started device on one queue of 16 entries whose guest memory is a memfd the test can
 * truncate under the mapping (the late-fault attribution tests: LateFaultAttributionTest,
 * SpentEvidenceAttackTest). The ring lives in the file's first 4 MiB, so a shrink to that size
 * takes data pages only and the device's own rounds do not fault. io_uring on the given image,
 * the blocking wait, shared threading (on {@code shared} when given), no EVENT_IDX; queue
 * breaks and fault reports are recorded. Stops and the close run on other threads with a
 * timeout, so a drain that hangs fails the test instead of hanging it.
 */
final class ShrinkableDeviceRig implements AutoCloseable {
    static final long AREA = 4L << 20;
    static final int SIZE = 16;

    final int fd;
    final GuestMemory memory;
    final BlockDevice device;
    final SplitQueueDriver q;
    final EventFd kick = EventFd.create(true);
    final EventFd irq = EventFd.create(true);
    /** Reasons given with {@link DeviceListener#queueBroken}. */
    final List<String> broken = new CopyOnWriteArrayList<>();
    /** Reports given with {@link DeviceListener#faultAttributed}. */
    final List<String> reports = new CopyOnWriteArrayList<>();
    /** The status byte's address of the last request {@link #add} put in. */
    private static long lastStatus;

    ShrinkableDeviceRig(String name, Image image, SharedIoThread shared) {
        fd = Memfd.create(name, 2 * AREA);
        memory = GuestMemory.builder().addRegion(0, 2 * AREA, fd, 0, 0, false).build();
        BlkConfig config = BlkConfig.builder(4L << 20).numQueues(1).queueSize(SIZE).build();
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(ThreadingMode.SHARED).build();
        BlockDevice.Builder b = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image)).memory(memory)
                .tuning(tuning).listener(new DeviceListener() {
                    @Override
                    public void queueBroken(int queue, String reason) {
                        broken.add(reason);
                    }

                    @Override
                    public void faultAttributed(String report) {
                        reports.add(report);
                    }
                }).name(name);
        if (shared != null) {
            b.ioThreads(shared);
        }
        device = b.build();
        device.negotiate(config.offeredFeatures() & ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX));
        q = rings(memory);
        device.configureQueue(0, SIZE, q.descGpa(), q.availGpa(), q.usedGpa());
        device.setKick(0, kick);
        device.setInterrupt(0, Interrupt.of(irq));
        device.start();
    }

    /** A driver-side queue of {@link #SIZE} in the first {@link #AREA} bytes of {@code memory}. */
    static SplitQueueDriver rings(GuestMemory memory) {
        return SplitQueueDriver.builder(memory).size(SIZE).eventIdx(false).area(0, AREA).build();
    }

    /** The file shrinks under the mapping: its second half (data only, no ring) is gone. */
    void shrink() {
        assertEquals(0, Native.libc().ftruncate(fd, AREA));
    }

    /** Puts a request of {@code type} in this device's ring (not yet published); returns its head. */
    int add(int type) {
        return add(q, type);
    }

    /** Publishes what was added and kicks. */
    void publishAndKick() {
        q.publishAvail();
        kick.signal();
    }

    /** One request of {@code type} through this device, start to interrupt; returns its status byte. */
    byte roundTrip(int type) {
        return roundTrip(q, kick, irq, type);
    }

    /** Stops (drains) the queue on another thread; fails if the drain takes more than 30 s. */
    void stop() throws Exception {
        CompletableFuture.supplyAsync(() -> device.stopQueue(0), r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
    }

    DeviceQueue queue() throws ReflectiveOperationException {
        java.lang.reflect.Method m = BlockDevice.class.getDeclaredMethod("queue", int.class);
        m.setAccessible(true);
        return (DeviceQueue) m.invoke(device, 0);
    }

    /** The I/O thread the queue is on. */
    IoThread thread() throws ReflectiveOperationException {
        java.lang.reflect.Field threads = BlockDevice.class.getDeclaredField("threadOfQueue");
        threads.setAccessible(true);
        return ((IoThread[]) threads.get(device))[0];
    }

    /** Adds [header][4 KiB data][status] in the ring's area (the first half of the file). */
    static int add(SplitQueueDriver q, int type) {
        long header = q.allocate(16, 16);
        long data = q.allocate(4096, 4096);
        long status = q.allocate(1, 1);
        long h = q.hostAddress(header, 16);
        UnsafeApi.putInt(h, type);
        UnsafeApi.putInt(h + 4, 0);
        UnsafeApi.putLong(h + 8, 16);
        UnsafeApi.putByte(q.hostAddress(status, 1), (byte) 0x7f);
        lastStatus = status;
        return q.addDirect(new long[] {header, data, status}, new int[] {16, 4096, 1},
                new boolean[] {false, type == T_IN, true}, 3);
    }

    /** One request through {@code q} (kicked and interrupted by the given eventfds); its status byte. */
    static byte roundTrip(SplitQueueDriver q, EventFd kick, EventFd irq, int type) {
        int head = add(q, type);
        long status = lastStatus;
        q.publishAvail();
        kick.signal();
        assertEquals(head, q.awaitUsed(irq, 10_000));
        return UnsafeApi.getByte(q.hostAddress(status, 1));
    }

    @Override
    public void close() {
        CompletableFuture<Void> close = CompletableFuture.runAsync(device::close, r -> new Thread(r).start());
        try {
            close.get(30, TimeUnit.SECONDS);
        } catch (ExecutionException | TimeoutException e) {
            throw new AssertionError("close did not return", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        memory.close();
        Native.libc().close(fd);
        kick.close();
        irq.close();
    }
}
