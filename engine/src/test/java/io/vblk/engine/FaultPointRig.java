package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.agrona.UnsafeApi;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.block.DriverFactory;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A started device for the fault-point attack tests: {@code queues} queues of 16 entries on one
 * I/O thread, io_uring on a real 4 MiB image, each queue's ring in its own 4 MiB area of one
 * memfd, real kick and call eventfds, the blocking wait, no EVENT_IDX (every request kicks and
 * interrupts). Stops, restarts and the close run on other threads with a timeout, so a drain
 * that hangs fails the test instead of hanging it.
 */
final class FaultPointRig implements AutoCloseable {
    static final int SIZE = 16;
    private static final long AREA = 4L << 20;

    final BlockDevice device;
    private final int fd;
    private final Image image;
    private final GuestMemory memory;
    private final SplitQueueDriver[] drivers;
    private final EventFd[] kicks;
    private final EventFd[] irqs;
    /** The status byte's address of the last request {@link #addRead} put in. */
    private long lastStatus;

    FaultPointRig(Path dir, String name, int queues) throws Exception {
        this(dir, name, queues, null);
    }

    /**
     * As above, served through block drivers from {@code drivers} (a qcow2 image; the 4 MiB raw
     * image is then only the back ends' unused default) instead of raw drivers.
     */
    FaultPointRig(Path dir, String name, int queues, DriverFactory blockDrivers) throws Exception {
        fd = Memfd.create(name, queues * AREA);
        kicks = new EventFd[queues];
        irqs = new EventFd[queues];
        drivers = new SplitQueueDriver[queues];
        image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
        memory = GuestMemory.builder().addRegion(0, queues * AREA, fd, 0, 0, false).build();
        BlkConfig config = BlkConfig.builder(4L << 20).numQueues(queues).queueSize(SIZE).build();
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).queueThreads(new int[queues]).build();
        BlockDevice.Builder b = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image)).memory(memory)
                .tuning(tuning).name(name);
        if (blockDrivers != null) {
            b.drivers(blockDrivers);
        }
        device = b.build();
        device.negotiate(config.offeredFeatures() & ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX));
        for (int q = 0; q < queues; q++) {
            kicks[q] = EventFd.create(true);
            irqs[q] = EventFd.create(true);
            drivers[q] = SplitQueueDriver.builder(memory).size(SIZE).eventIdx(false).area(q * AREA, AREA).build();
            configure(q);
            device.setKick(q, kicks[q]);
            device.setInterrupt(q, Interrupt.of(irqs[q]));
        }
        device.start();
    }

    SplitQueueDriver driver(int q) {
        return drivers[q];
    }

    /** Puts a 4 KiB read of sector 16 in {@code q}'s ring (not yet published); returns its head. */
    int addRead(int q) {
        return addRead(q, 16);
    }

    /** Puts a 4 KiB read of {@code sector} in {@code q}'s ring (not yet published); returns its head. */
    int addRead(int q, long sector) {
        SplitQueueDriver d = drivers[q];
        long header = d.allocate(16, 16);
        long data = d.allocate(4096, 4096);
        long status = d.allocate(1, 1);
        long h = d.hostAddress(header, 16);
        UnsafeApi.putInt(h, T_IN);
        UnsafeApi.putInt(h + 4, 0);
        UnsafeApi.putLong(h + 8, sector);
        UnsafeApi.putByte(d.hostAddress(status, 1), (byte) 0x7f);
        lastStatus = status;
        return d.addDirect(new long[] {header, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 3);
    }

    /** Publishes what was added to {@code q}'s ring and kicks. */
    void publishAndKick(int q) {
        drivers[q].publishAvail();
        kick(q);
    }

    void kick(int q) {
        kicks[q].signal();
    }

    /** One read through {@code q}, start to interrupt; returns its status byte. */
    byte roundTrip(int q) {
        int head = addRead(q);
        long status = lastStatus;
        publishAndKick(q);
        assertEquals(head, drivers[q].awaitUsed(irqs[q], 10_000));
        return UnsafeApi.getByte(drivers[q].hostAddress(status, 1));
    }

    /** Waits for {@code q}'s next used element (its head, or {@link SplitQueueDriver#NONE} after 10 s). */
    int awaitUsed(int q) {
        return drivers[q].awaitUsed(irqs[q], 10_000);
    }

    void awaitQuarantined(int q) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!device.isBroken(q)) {
            assertTrue(System.nanoTime() < deadline, "queue " + q + " never quarantined");
            Thread.sleep(1);
        }
    }

    /** Stops (drains) {@code q} on another thread; fails if the drain takes more than 30 s. */
    void stopQueue(int q) throws Exception {
        CompletableFuture.supplyAsync(() -> device.stopQueue(q), r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
    }

    /** A quarantined, stopped queue reset by its driver and started again on a fresh ring. */
    void restartQueue(int q) {
        device.clearQuarantine(q);
        drivers[q].initialise();
        configure(q);
        device.startQueue(q);
    }

    /** The I/O thread all queues are on. */
    IoThread thread() throws ReflectiveOperationException {
        java.lang.reflect.Field threads = BlockDevice.class.getDeclaredField("threadOfQueue");
        threads.setAccessible(true);
        return ((IoThread[]) threads.get(device))[0];
    }

    DeviceQueue queue(int q) throws ReflectiveOperationException {
        java.lang.reflect.Method m = BlockDevice.class.getDeclaredMethod("queue", int.class);
        m.setAccessible(true);
        return (DeviceQueue) m.invoke(device, q);
    }

    private void configure(int q) {
        device.configureQueue(q, SIZE, drivers[q].descGpa(), drivers[q].availGpa(), drivers[q].usedGpa());
    }

    @Override
    public void close() throws IOException {
        try {
            CompletableFuture.runAsync(device::close, r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while the device closed", e);
        } catch (ExecutionException | TimeoutException e) {
            throw new IOException("the device did not close", e);
        } finally {
            memory.close();
            image.close();
            Native.libc().close(fd);
            for (int q = 0; q < kicks.length; q++) {
                kicks[q].close();
                irqs[q].close();
            }
        }
    }
}
