package io.vblk.engine;

import java.util.ArrayList;
import java.util.List;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.CachedNanoClock;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.vring.QueueState;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.SplitQueueDriver;

/**
 * One {@link IoThread} that is never started, one running queue and a guest driver in real
 * memfd guest memory, over the null back end: a test drives the rounds itself by calling
 * {@link IoThread#doWork()}, and sets the time with the injected {@link CachedNanoClock}. No
 * thread runs unless the test starts the completion route.
 *
 * <p>By default the null back end sits behind a {@link ForwardingBackend} that declines {@link
 * IoBackend#reapOnSubmittingThread()}, so every operation completes at the next round's poll
 * (through its eventfd), as a kernel back end's would; {@code sameRound} gives the I/O thread
 * the null back end itself, which finishes operations in the round that submitted them.
 */
final class RoundRig implements AutoCloseable {
    static final int QUEUE_SIZE = 64;
    static final long CAPACITY = 64L << 20;

    static final long LANE_BYTES = 8L << 20;

    final SteppingClock clock = new SteppingClock();

    /**
     * The injected clock, moved by hand; with a {@code stepNs} it also moves that much at each
     * read, so a wait bounded by it (the answer window) runs out without a real wait.
     */
    static final class SteppingClock extends CachedNanoClock {
        long stepNs;
        /** Thrown (once) by the next read: a late fault where the I/O thread reads the time. */
        RuntimeException failNext;

        @Override
        public long nanoTime() {
            RuntimeException e = failNext;
            if (e != null) {
                failNext = null;
                throw e;
            }
            long now = super.nanoTime();
            if (stepNs > 0) {
                advance(stepNs);
            }
            return now;
        }
    }
    final GuestMemory memory;
    /** Queue 0's guest side (the one-queue tests' only queue). */
    final SplitQueueDriver driver;
    final EventFd interrupt;
    final DeviceQueue queue;
    /** Every queue's guest side and device queue, by queue index. */
    final Lane[] lanes;
    final IoThread thread;
    final List<String> broken = new ArrayList<>();

    /** One queue: its guest driver in its own 8 MiB of guest memory, its device queue and interrupt. */
    static final class Lane {
        final SplitQueueDriver driver;
        final DeviceQueue queue;
        final EventFd interrupt = EventFd.create(true);
        private final long headers;
        private final long statuses;
        private final long data;

        Lane(GuestMemory memory, int index, BlkConfig config) {
            driver = SplitQueueDriver.builder(memory).size(QUEUE_SIZE).eventIdx(true)
                    .area(index * LANE_BYTES, LANE_BYTES).build();
            headers = driver.allocate(16L * QUEUE_SIZE, 16);
            statuses = driver.allocate(QUEUE_SIZE, 1);
            data = driver.allocate(4096L * QUEUE_SIZE, 4096);
            queue = new DeviceQueue(index, QUEUE_SIZE + Math.max(1, config.segMax()));
            int rc = queue.ring.restore(memory, new QueueState(QUEUE_SIZE, driver.descGpa(), driver.availGpa(),
                    driver.usedGpa(), 0, 0), true, true);
            if (rc != 0) {
                throw new IllegalStateException("ring refused: " + queue.ring.error());
            }
            queue.ring.disableNotifications();
            queue.interrupt = Interrupt.of(interrupt);
            queue.state = QueueLifecycle.RUNNING;
        }

        /** Offers a request of {@code type} with a 4 KiB device-writable buffer (not yet published). */
        int add(int type, long sector) {
            return add(type, sector, true);
        }

        /** Offers a request of {@code type} with a 4 KiB buffer, device-writable or not (not yet published). */
        int add(int type, long sector, boolean dataWritable) {
            int slot = driver.availIdx() & (QUEUE_SIZE - 1);
            long header = headers + 16L * slot;
            long h = driver.hostAddress(header, 16);
            UnsafeApi.putInt(h, type);
            UnsafeApi.putInt(h + 4, 0);
            UnsafeApi.putLong(h + 8, sector);
            UnsafeApi.putByte(driver.hostAddress(statuses + slot, 1), (byte) 0x7f);
            int head = driver.addDirect(new long[] {header, data + 4096L * slot, statuses + slot},
                    new int[] {16, 4096, 1}, new boolean[] {false, dataWritable, true}, 3);
            if (head < 0) {
                throw new IllegalStateException("queue full");
            }
            return head;
        }

        /** Adds and publishes {@code count} reads. */
        void offerReads(int count) {
            for (int i = 0; i < count; i++) {
                add(BlkRequestDescriptor.T_IN, i * 8L);
            }
            driver.publishAvail();
        }

        /**
         * As a hostile guest that watches status bytes: puts {@code head} (whose request went out
         * at avail slot {@code slot}) into the available ring again, status reset, without
         * reaping its used entry, and publishes it.
         */
        void repost(int head, int slot) {
            UnsafeApi.putByte(driver.hostAddress(statuses + slot, 1), (byte) 0x7f);
            long avail = driver.hostAddress(driver.availGpa(), 4 + 2L * QUEUE_SIZE);
            int idx = UnsafeApi.getShortVolatile(null, avail + 2) & 0xffff;
            UnsafeApi.putShort(avail + 4 + 2L * (idx & (QUEUE_SIZE - 1)), (short) head);
            UnsafeApi.putShortVolatile(null, avail + 2, (short) (idx + 1));
        }

        /** The status byte of the request at avail slot {@code slot}. */
        byte status(int slot) {
            return UnsafeApi.getByte(driver.hostAddress(statuses + slot, 1));
        }
    }

    final IoBackend io;
    final BlkConfig config;

    RoundRig(Tuning tuning, Throttle throttle) {
        this(tuning, throttle, false);
    }

    RoundRig(Tuning tuning, Throttle throttle, boolean sameRound) {
        this(tuning, throttle, sameRound, 1);
    }

    /** As above with {@code queues} queues on the one I/O thread. */
    RoundRig(Tuning tuning, Throttle throttle, boolean sameRound, int queues) {
        this(tuning, throttle, sameRound, queues, null);
    }

    /** One queue over {@code given} (e.g. io_uring on a real file) instead of the null back end. */
    RoundRig(Tuning tuning, Throttle throttle, IoBackend given) {
        this(tuning, throttle, false, 1, given);
    }

    RoundRig(Tuning tuning, Throttle throttle, boolean sameRound, int queues, IoBackend given) {
        this(tuning, throttle, sameRound, queues, given, c -> { }, 0);
    }

    /**
     * The full form: {@code config} adjusts the device's configuration, and the feature bits in
     * {@code withheld} are not negotiated (e.g. FLUSH, for a write-through device).
     */
    RoundRig(Tuning tuning, Throttle throttle, boolean sameRound, int queues, IoBackend given,
             java.util.function.Consumer<BlkConfig.Builder> config, long withheld) {
        BlkConfig.Builder configBuilder = BlkConfig.builder(CAPACITY).queueSize(QUEUE_SIZE).numQueues(queues);
        config.accept(configBuilder);
        this.config = configBuilder.build();
        DeviceModel model = new DeviceModel(this.config);
        model.negotiate(this.config.offeredFeatures() & ~withheld);
        memory = GuestMemory.builder().guarded(true).addMemfd(0, queues * LANE_BYTES).build();
        lanes = new Lane[queues];
        DeviceQueue[] deviceQueues = new DeviceQueue[queues];
        for (int q = 0; q < queues; q++) {
            lanes[q] = new Lane(memory, q, this.config);
            deviceQueues[q] = lanes[q].queue;
        }
        driver = lanes[0].driver;
        queue = lanes[0].queue;
        interrupt = lanes[0].interrupt;
        DeviceListener listener = new DeviceListener() {
            @Override
            public void queueBroken(int q, String reason) {
                broken.add(reason);
            }
        };
        if (given != null) {
            io = given;
        } else {
            IoBackend nul = IoBackends.open(BackendKind.NULL, null, 64);
            io = sameRound ? nul : new ForwardingBackend(nul) {
            };
        }
        RawDriver backend = new RawDriver(io, CAPACITY, false, true);
        thread = new IoThread(0, model, tuning, throttle, listener, deviceQueues, backend, clock);
    }

    /** Offers a 4 KiB read of {@code sector} (not yet published); returns its head. */
    int addRead(long sector) {
        return add(BlkRequestDescriptor.T_IN, sector);
    }

    /** Offers a request of {@code type} on queue 0 with a 4 KiB device-writable buffer (not yet published). */
    int add(int type, long sector) {
        return lanes[0].add(type, sector);
    }

    /** Adds and publishes {@code count} reads on queue 0. */
    void offerReads(int count) {
        lanes[0].offerReads(count);
    }

    /** The status byte of queue 0's request at avail slot {@code slot}. */
    byte status(int slot) {
        return lanes[0].status(slot);
    }

    /** Reaps every used element the device published; returns how many. */
    int reapAll() {
        int n = 0;
        while (driver.reap() >= 0) {
            n++;
        }
        return n;
    }

    @Override
    public void close() {
        thread.shutdown();
        for (Lane lane : lanes) {
            lane.interrupt.close();
        }
        memory.close();
    }
}
