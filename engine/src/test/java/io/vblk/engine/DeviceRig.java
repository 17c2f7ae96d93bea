package io.vblk.engine;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;

import org.agrona.UnsafeApi;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.block.DriverFactory;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A device under test with a guest around it: guarded memfd guest memory, one
 * {@link SplitQueueDriver} per queue acting as the guest driver, a real image file, real
 * eventfds for kicks and interrupts. Requests are built as Linux builds them.
 */
final class DeviceRig implements AutoCloseable {
    static final long QUEUE_AREA = 8L << 20;
    static final long BUFFERS = 32L << 20;

    final Path imagePath;
    final Image image;
    final GuestMemory memory;
    final SplitQueueDriver[] drivers;
    final EventFd[] kicks;
    final EventFd[] interrupts;
    final BlockDevice device;
    final BackendKind kind;
    private final long[] scratchHeader;
    private final long[] scratchStatus;
    private final long[][] statusOf;

    private DeviceRig(Path imagePath, BackendKind kind, BlkConfig config, Tuning tuning, boolean eventIdx,
                      boolean readOnlyImage, boolean indirect, DeviceListener listener, DriverFactory driverFactory,
                      SharedIoThread[] ioThreads, java.util.function.UnaryOperator<BackendFactory> backends) {
        this.imagePath = imagePath;
        this.kind = kind;
        int queues = config.numQueues();
        this.image = Image.open(imagePath, ImageOptions.defaults().readOnly(readOnlyImage));
        this.memory = GuestMemory.builder().guarded(true).addMemfd(0, queues * QUEUE_AREA + BUFFERS).build();
        this.drivers = new SplitQueueDriver[queues];
        this.kicks = new EventFd[queues];
        this.interrupts = new EventFd[queues];
        this.scratchHeader = new long[queues];
        this.scratchStatus = new long[queues];
        this.statusOf = new long[queues][config.queueSize()];
        BlockDevice.Builder db = BlockDevice.builder(config, backends.apply(BackendFactory.of(kind, image)))
                .memory(memory).tuning(tuning).listener(listener).name("rig-" + kind.cliName());
        if (ioThreads != null) {
            db.ioThreads(ioThreads);
        }
        if (driverFactory != null) {
            db.drivers(driverFactory);
        }
        this.device = db.build();
        long features = config.offeredFeatures();
        if (!eventIdx) {
            features &= ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX);
        }
        device.negotiate(features);
        for (int q = 0; q < queues; q++) {
            drivers[q] = SplitQueueDriver.builder(memory).size(config.queueSize()).eventIdx(eventIdx)
                    .indirectEntries(indirect ? 8 : 0).area(q * QUEUE_AREA, QUEUE_AREA).build();
            kicks[q] = EventFd.create(true);
            interrupts[q] = EventFd.create(true);
            device.configureQueue(q, config.queueSize(), drivers[q].descGpa(), drivers[q].availGpa(), drivers[q].usedGpa());
            device.setKick(q, kicks[q]);
            device.setInterrupt(q, Interrupt.of(interrupts[q]));
            scratchHeader[q] = drivers[q].allocate(16L * config.queueSize(), 16);
            scratchStatus[q] = drivers[q].allocate(config.queueSize(), 1);
        }
        device.start();
    }

    static Builder builder(Path dir, BackendKind kind) {
        return new Builder(dir, kind);
    }

    /** Creates a zero-filled image of {@code bytes} (written, so every block is allocated). */
    static Path createImage(Path dir, long bytes) throws IOException {
        Path p = Files.createTempFile(dir, "image", ".raw");
        byte[] block = new byte[1 << 20];
        try (var out = Files.newOutputStream(p)) {
            for (long done = 0; done < bytes; done += block.length) {
                out.write(block, 0, (int) Math.min(block.length, bytes - done));
            }
        }
        return p;
    }

    SplitQueueDriver driver(int q) {
        return drivers[q];
    }

    /** Allocates a guest buffer from queue q's heap. */
    long buffer(int q, long bytes) {
        return drivers[q].allocate(bytes, 4096);
    }

    long host(long gpa, long bytes) {
        return drivers[0].hostAddress(gpa, bytes);
    }

    /**
     * Adds a request to queue q laid out as Linux does: [header 16 R][data][status 1 W].
     * Returns the head, whose status lives at {@link #statusGpa(int, int)}.
     */
    int add(int q, int type, long sector, long dataGpa, int dataLength, boolean dataWritable) {
        return add(q, type, sector, dataGpa, dataLength, dataWritable, false);
    }

    /**
     * As {@link #add(int, int, long, long, int, boolean)}, the chain in one indirect table when
     * {@code indirect} (one ring descriptor per request: a whole ring of requests fits).
     */
    int add(int q, int type, long sector, long dataGpa, int dataLength, boolean dataWritable, boolean indirect) {
        SplitQueueDriver d = drivers[q];
        int slot = d.availIdx() & (d.size() - 1);
        long header = scratchHeader[q] + 16L * slot;
        long status = scratchStatus[q] + slot;
        writeHeader(header, type, sector);
        UnsafeApi.putByte(host(status, 1), (byte) 0x7f);
        long[] gpas = dataLength > 0 ? new long[] {header, dataGpa, status} : new long[] {header, status};
        int[] lengths = dataLength > 0 ? new int[] {16, dataLength, 1} : new int[] {16, 1};
        boolean[] writable = dataLength > 0 ? new boolean[] {false, dataWritable, true} : new boolean[] {false, true};
        int head = indirect ? d.addIndirect(gpas, lengths, writable, gpas.length)
                : d.addDirect(gpas, lengths, writable, gpas.length);
        if (head < 0) {
            throw new IllegalStateException("queue " + q + " full");
        }
        statusOf[q][head] = status;
        return head;
    }


    void writeHeader(long headerGpa, int type, long sector) {
        long h = host(headerGpa, 16);
        UnsafeApi.putInt(h, type);
        UnsafeApi.putInt(h + 4, 0);
        UnsafeApi.putLong(h + 8, sector);
    }

    /** Publishes added chains and kicks if the device asks. */
    void kick(int q) {
        if (drivers[q].publishAvail()) {
            kicks[q].signal();
        }
    }

    /** The status byte of request {@code head} on queue q. */
    byte status(int q, int head) {
        return UnsafeApi.getByte(host(statusOf[q][head], 1));
    }

    /**
     * Waits until a used element arrives on queue q (sleeping on the interrupt eventfd when the
     * device says so) and returns its head; fails after {@code timeoutMs}.
     */
    int awaitUsed(int q, long timeoutMs) {
        SplitQueueDriver d = drivers[q];
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (true) {
            int head = d.reap();
            if (head >= 0) {
                return head;
            }
            if (head != SplitQueueDriver.NONE) {
                throw new AssertionError("driver saw a bad used ring: " + head);
            }
            if (d.enableInterrupts()) {
                continue;
            }
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                throw new AssertionError("no completion on queue " + q + " within " + timeoutMs + " ms; counters "
                        + device.counters(q) + "; broken: " + device.brokenReason(q));
            }
            interrupts[q].await((int) Math.max(1, Math.min(left / 1_000_000L, 100)));
            interrupts[q].read();
        }
    }

    /** Submits one request and waits for it; returns its status. */
    byte roundTrip(int q, int type, long sector, long dataGpa, int dataLength, boolean dataWritable) {
        int head = add(q, type, sector, dataGpa, dataLength, dataWritable);
        kick(q);
        int done = awaitUsed(q, 10_000);
        if (done != head) {
            throw new AssertionError("expected head " + head + " back, got " + done);
        }
        return status(q, head);
    }

    @Override
    public void close() {
        device.close();
        for (int q = 0; q < drivers.length; q++) {
            kicks[q].close();
            interrupts[q].close();
        }
        memory.close();
        image.close();
    }

    /** Builder for a rig. */
    static final class Builder {
        private final Path dir;
        private final BackendKind kind;
        private long imageBytes = 8L << 20;
        private Path imagePath;
        private Consumer<BlkConfig.Builder> config = b -> { };
        private Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build();
        private boolean eventIdx = true;
        private boolean readOnlyImage;
        private boolean indirect = true;
        private DeviceListener listener = DeviceListener.NONE;
        private SharedIoThread[] ioThreads;
        private DriverFactory driverFactory;
        private long capacityBytes = -1;
        private java.util.function.UnaryOperator<BackendFactory> backends = f -> f;

        Builder(Path dir, BackendKind kind) {
            this.dir = dir;
            this.kind = kind;
        }

        Builder imageBytes(long value) {
            imageBytes = value;
            return this;
        }

        Builder image(Path value) {
            imagePath = value;
            return this;
        }

        Builder config(Consumer<BlkConfig.Builder> value) {
            config = value;
            return this;
        }

        Builder tuning(Tuning value) {
            tuning = value;
            return this;
        }

        Builder eventIdx(boolean value) {
            eventIdx = value;
            return this;
        }

        Builder readOnly(boolean value) {
            readOnlyImage = value;
            return this;
        }

        Builder ioThreads(SharedIoThread... value) {
            ioThreads = value;
            return this;
        }

        Builder listener(DeviceListener value) {
            listener = value;
            return this;
        }

        /** Serves the image through {@code value}'s drivers (a format), with a disk of {@code capacity} bytes. */
        Builder drivers(DriverFactory value, long capacity) {
            driverFactory = value;
            capacityBytes = capacity;
            return this;
        }

        /** Wraps the back ends the device opens (e.g. in a {@link GatedBackend}). */
        Builder backends(java.util.function.UnaryOperator<BackendFactory> value) {
            backends = value;
            return this;
        }

        DeviceRig build() throws IOException {
            Path p = imagePath != null ? imagePath : createImage(dir, imageBytes);
            BlkConfig.Builder b = BlkConfig.builder(capacityBytes >= 0 ? capacityBytes : Files.size(p)).readOnly(readOnlyImage);
            config.accept(b);
            return new DeviceRig(p, kind, b.build(), tuning, eventIdx, readOnlyImage, indirect, listener, driverFactory,
                    ioThreads, backends);
        }
    }
}
