package io.vblk.engine;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.block.DriverFactory;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.SplitQueueDriver;

/**
 * A device under test with a guest around it: guarded memfd guest memory, one test-kit
 * {@link BlkQueue} per queue acting as the guest driver (requests built as Linux builds them),
 * a real image file, real eventfds for kicks and interrupts.
 */
final class DeviceRig implements AutoCloseable {
    static final long QUEUE_AREA = 8L << 20;
    static final long BUFFERS = 32L << 20;

    final Path imagePath;
    final Image image;
    final GuestMemory memory;
    final BlkQueue[] queues;
    final SplitQueueDriver[] drivers;
    final EventFd[] kicks;
    final EventFd[] interrupts;
    final BlockDevice device;
    final BackendKind kind;

    private DeviceRig(Path imagePath, BackendKind kind, BlkConfig config, Tuning tuning, boolean eventIdx,
                      boolean readOnlyImage, boolean indirect, DeviceListener listener, DriverFactory driverFactory,
                      SharedIoThread[] ioThreads, java.util.function.UnaryOperator<BackendFactory> backends,
                      boolean singleIssuer, long withheld) {
        this.imagePath = imagePath;
        this.kind = kind;
        int queues = config.numQueues();
        this.image = Image.open(imagePath, ImageOptions.defaults().readOnly(readOnlyImage));
        this.memory = GuestMemory.builder().guarded(true).addMemfd(0, queues * QUEUE_AREA + BUFFERS).build();
        this.queues = new BlkQueue[queues];
        this.drivers = new SplitQueueDriver[queues];
        this.kicks = new EventFd[queues];
        this.interrupts = new EventFd[queues];
        BlockDevice.Builder db = BlockDevice.builder(config, backends.apply(BackendFactory.of(kind, image, singleIssuer)))
                .memory(memory).tuning(tuning).listener(listener).name("rig-" + kind.cliName());
        if (ioThreads != null) {
            db.ioThreads(ioThreads);
        }
        if (driverFactory != null) {
            db.drivers(driverFactory);
        }
        this.device = db.build();
        long features = config.offeredFeatures() & ~withheld;
        if (!eventIdx) {
            features &= ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX);
        }
        device.negotiate(features);
        for (int q = 0; q < queues; q++) {
            drivers[q] = SplitQueueDriver.builder(memory).size(config.queueSize()).eventIdx(eventIdx)
                    .indirectEntries(indirect ? 8 : 0).area(q * QUEUE_AREA, QUEUE_AREA).build();
            this.queues[q] = new BlkQueue(memory, q, drivers[q], 0);
            kicks[q] = this.queues[q].kick;
            interrupts[q] = this.queues[q].call;
            device.configureQueue(q, config.queueSize(), drivers[q].descGpa(), drivers[q].availGpa(), drivers[q].usedGpa());
            device.setKick(q, kicks[q]);
            device.setInterrupt(q, Interrupt.of(interrupts[q]));
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
        return queues[q].add(type, sector, dataGpa, dataLength, dataWritable, indirect);
    }

    void writeHeader(long headerGpa, int type, long sector) {
        queues[0].writeHeader(headerGpa, type, sector);
    }

    /** Publishes added chains and kicks if the device asks. */
    void kick(int q) {
        queues[q].publish();
    }

    /** The status byte of request {@code head} on queue q. */
    byte status(int q, int head) {
        return queues[q].statusOfHead(head);
    }

    /**
     * Waits until a used element arrives on queue q (sleeping on the interrupt eventfd when the
     * device says so) and returns its head; fails after {@code timeoutMs}.
     */
    int awaitUsed(int q, long timeoutMs) {
        return queues[q].awaitUsed(timeoutMs, () -> "counters " + device.counters(q) + "; broken: " + device.brokenReason(q));
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
        for (BlkQueue q : queues) {
            q.close();
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
        private long withheld;

        /** The guest driver does not negotiate feature {@code bit} (e.g. {@link BlkFeatures#FLUSH}). */
        Builder withhold(int bit) {
            withheld |= BlkFeatures.bit(bit);
            return this;
        }

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

        /** Asks for single-issuer io_uring rings ({@link io.vblk.aio.BackendOptions#singleIssuer()}). */
        Builder singleIssuer(boolean value) {
            singleIssuer = value;
            return this;
        }

        private boolean singleIssuer = io.vblk.aio.BackendOptions.SINGLE_ISSUER_DEFAULT;

        /** Wraps the back ends the device opens (e.g. in a {@link io.vblk.testkit.GatedBackend}). */
        Builder backends(java.util.function.UnaryOperator<BackendFactory> value) {
            backends = value;
            return this;
        }

        DeviceRig build() throws IOException {
            Path p = imagePath != null ? imagePath : createImage(dir, imageBytes);
            BlkConfig.Builder b = BlkConfig.builder(capacityBytes >= 0 ? capacityBytes : Files.size(p)).readOnly(readOnlyImage);
            config.accept(b);
            return new DeviceRig(p, kind, b.build(), tuning, eventIdx, readOnlyImage, indirect, listener, driverFactory,
                    ioThreads, backends, singleIssuer, withheld);
        }
    }
}
