package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.vring.QueueState;
import io.vblk.testkit.SplitQueueDriver;

/**
 * Stop drains, state survives stop/start and moves between engines, under load: a guest thread
 * keeps tagged writes and verifying reads in flight while the control thread stops and resumes
 * the queue 1,000 times, every tenth time into a fresh engine built from the exported state.
 */
class LifecycleTest {
    private static final int CYCLES = 1_000;
    private static final int SLOTS = 32;
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void stopResumeAndMigrateUnderLoadLoseNothing(BackendKind kind) throws Exception {
        run(Tuning.defaults());
    }

    /** Dedicated mode: stop must also wait for the completion thread's used.idx publish. */
    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING"})
    void stopResumeUnderLoadInDedicatedMode(BackendKind kind) throws Exception {
        run(Tuning.builder().threadingMode(ThreadingMode.DEDICATED).build());
    }

    private void run(Tuning tuning) throws Exception {
        Path imagePath = DeviceRig.createImage(dir, SLOTS * BLOCK);
        BlkConfig config = BlkConfig.builder(SLOTS * BLOCK).queueSize(128).build();
        try (Image image = Image.open(imagePath, ImageOptions.defaults());
             GuestMemory memory = GuestMemory.builder().guarded(true).addMemfd(0, 4L << 20).build();
             EventFd kick = EventFd.create(true);
             EventFd irq = EventFd.create(true)) {
            SplitQueueDriver driver = SplitQueueDriver.builder(memory).size(128).eventIdx(true).area(0, 4L << 20).build();
            AtomicReference<BlockDevice> device = new AtomicReference<>(newDevice(config, image, memory, kick, irq, tuning));
            device.get().configureQueue(0, 128, driver.descGpa(), driver.availGpa(), driver.usedGpa());
            device.get().startQueue(0);

            Guest guest = new Guest(driver, kick, irq);
            Thread guestThread = new Thread(guest, "guest");
            guestThread.start();
            int migrations = 0;
            for (int cycle = 0; cycle < CYCLES && guest.failure.get() == null; cycle++) {
                QueueState state = device.get().stopQueue(0);
                assertEquals(0, device.get().counters(0).get(QueueCounters.REQUESTS)
                        - device.get().counters(0).get(QueueCounters.COMPLETIONS), "stop returned with requests in flight");
                if (cycle % 10 == 9) {
                    device.get().close();
                    device.set(newDevice(config, image, memory, kick, irq, tuning));
                    device.get().setQueueState(0, state);
                    migrations++;
                }
                device.get().startQueue(0);
                if (cycle % 50 == 0) {
                    Thread.sleep(1);
                }
            }
            guest.stop.set(true);
            guestThread.join(30_000);
            device.get().close();
            assertNull(guest.failure.get(), () -> "guest saw: " + guest.failure.get());
            assertEquals(CYCLES / 10, migrations);
            assertTrue(guest.completed > 1_000, "the guest made progress through the cycles: " + guest.completed);
        }
    }

    private static BlockDevice newDevice(BlkConfig config, Image image, GuestMemory memory, EventFd kick, EventFd irq,
                                         Tuning tuning) {
        BlockDevice d = BlockDevice.builder(config, BackendFactory.of(BackendKindHolder.kind(image), image))
                .memory(memory).tuning(tuning).name("lifecycle").build();
        d.negotiate(config.offeredFeatures());
        d.setKick(0, kick);
        d.setInterrupt(0, Interrupt.of(irq));
        return d;
    }

    /** The back end of the running parameter (set per test invocation). */
    private static final class BackendKindHolder {
        static volatile BackendKind current = BackendKind.IO_URING;

        static BackendKind kind(Image image) {
            return current;
        }
    }

    @org.junit.jupiter.api.BeforeEach
    void noteKind(org.junit.jupiter.api.TestInfo info) {
        String name = info.getDisplayName();
        for (BackendKind k : BackendKind.values()) {
            if (name.contains(k.name())) {
                BackendKindHolder.current = k;
            }
        }
    }

    /**
     * The guest: each slot owns one block and alternates a write of a new tag with a read that
     * must return exactly that tag. Any used element it did not expect, any lost request (no
     * completion for 20 s) or any wrong data is a failure.
     */
    private static final class Guest implements Runnable {
        final SplitQueueDriver driver;
        final EventFd kick;
        final EventFd irq;
        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicReference<String> failure = new AtomicReference<>();
        final long[] header = new long[SLOTS];
        final long[] status = new long[SLOTS];
        final long[] data = new long[SLOTS];
        final int[] generation = new int[SLOTS];
        final boolean[] reading = new boolean[SLOTS];
        final int[] headSlot = new int[128];
        long completed;

        Guest(SplitQueueDriver driver, EventFd kick, EventFd irq) {
            this.driver = driver;
            this.kick = kick;
            this.irq = irq;
            java.util.Arrays.fill(headSlot, -1);
            for (int s = 0; s < SLOTS; s++) {
                header[s] = driver.allocate(16, 16);
                status[s] = driver.allocate(1, 1);
                data[s] = driver.allocate(BLOCK, BLOCK);
            }
        }

        @Override
        public void run() {
            try {
                for (int s = 0; s < SLOTS; s++) {
                    issue(s);
                }
                publish();
                long lastProgress = System.nanoTime();
                while (!stop.get() || outstanding() > 0) {
                    int head = driver.reap();
                    if (head >= 0) {
                        int s = headSlot[head];
                        if (s < 0) {
                            throw new AssertionError("completion for head " + head + " that is not outstanding");
                        }
                        headSlot[head] = -1;
                        check(s);
                        completed++;
                        lastProgress = System.nanoTime();
                        if (!stop.get()) {
                            issue(s);
                        }
                        continue;
                    }
                    if (head != SplitQueueDriver.NONE) {
                        throw new AssertionError("bad used ring: " + head);
                    }
                    publish();
                    if (!driver.enableInterrupts()) {
                        irq.await(5);
                        irq.read();
                    }
                    if (System.nanoTime() - lastProgress > 20_000_000_000L) {
                        throw new AssertionError("no completion for 20 s: a request was lost (" + outstanding() + " outstanding)");
                    }
                }
            } catch (Throwable t) {
                failure.compareAndSet(null, t.toString());
            }
        }

        private int outstanding() {
            int n = 0;
            for (int h : headSlot) {
                if (h >= 0) {
                    n++;
                }
            }
            return n;
        }

        private void publish() {
            if (driver.publishAvail()) {
                kick.signal();
            }
        }

        private void issue(int s) {
            boolean read = generation[s] > 0 && !reading[s];
            long d = driver.hostAddress(data[s], BLOCK);
            if (read) {
                UnsafeApi.setMemory(d, BLOCK, (byte) 0);
            } else {
                generation[s]++;
                Random r = new Random(((long) s << 32) | generation[s]);
                for (int i = 0; i < BLOCK; i += 8) {
                    UnsafeApi.putLong(d + i, r.nextLong());
                }
            }
            reading[s] = read;
            long h = driver.hostAddress(header[s], 16);
            UnsafeApi.putInt(h, read ? T_IN : T_OUT);
            UnsafeApi.putInt(h + 4, 0);
            UnsafeApi.putLong(h + 8, (long) s * (BLOCK / 512));
            UnsafeApi.putByte(driver.hostAddress(status[s], 1), (byte) 0x7f);
            int head = driver.addDirect(new long[] {header[s], data[s], status[s]}, new int[] {16, BLOCK, 1},
                    new boolean[] {false, read, true}, 3);
            if (head < 0) {
                throw new AssertionError("ring full with " + outstanding() + " outstanding");
            }
            headSlot[head] = s;
        }

        private void check(int s) {
            byte st = UnsafeApi.getByte(driver.hostAddress(status[s], 1));
            if (st != S_OK) {
                throw new AssertionError("slot " + s + " status " + st);
            }
            if (reading[s]) {
                long d = driver.hostAddress(data[s], BLOCK);
                Random r = new Random(((long) s << 32) | generation[s]);
                for (int i = 0; i < BLOCK; i += 8) {
                    if (UnsafeApi.getLong(d + i) != r.nextLong()) {
                        throw new AssertionError("slot " + s + " generation " + generation[s] + " read back wrong data at " + i);
                    }
                }
            }
        }
    }
}
