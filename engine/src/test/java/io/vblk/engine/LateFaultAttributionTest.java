package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

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
 * A guest-memory fault that Java 17 delivers late, at a safepoint after the faulting access,
 * lands while the I/O thread serves ANOTHER queue (GuestFaults, "late faults"). It is attributed
 * by evidence: the device whose memory file is now shorter than its mapping is quarantined, the
 * queue it landed in is not, and loses nothing. Deterministic: device A's memfd really is
 * truncated (past its rings, so its own rounds do not fault), and the JVM's error is thrown
 * through {@link FaultPoints} while the thread serves device B, in B's pop loop ({@code POP})
 * or outside it, right after B's back end submitted ({@code SUBMIT_RETURNED}). Before the
 * attribution B was quarantined and its request never completed.
 */
class LateFaultAttributionTest {
    private static final long AREA = 4L << 20;
    private static final int SIZE = 16;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    /** A device on one queue whose guest memory is a memfd this test can truncate. */
    private static final class Dev implements AutoCloseable {
        final int fd;
        final GuestMemory memory;
        final BlockDevice device;
        final SplitQueueDriver q;
        final EventFd kick = EventFd.create(true);
        final EventFd irq = EventFd.create(true);
        final List<String> broken = new CopyOnWriteArrayList<>();
        final List<String> reports = new CopyOnWriteArrayList<>();

        Dev(String name, Image image, SharedIoThread shared) {
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

        /** The file shrinks under the mapping: its second half (data only, no ring) is gone. */
        void shrink() {
            assertEquals(0, Native.libc().ftruncate(fd, AREA));
        }

        @Override
        public void close() {
            CompletableFuture<Void> close = CompletableFuture.runAsync(device::close, r -> new Thread(r).start());
            try {
                close.get(30, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
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

    private static SplitQueueDriver rings(GuestMemory memory) {
        return SplitQueueDriver.builder(memory).size(SIZE).eventIdx(false).area(0, AREA).build();
    }

    /** Device A's file shrank; the error lands in device B (same shared I/O thread) at {@code point}. */
    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.POP, FaultPoints.SUBMIT_RETURNED})
    void aLateFaultLandingInAnotherDevicesQueueQuarantinesOnlyTheDeviceWhoseFileShrank(int point) throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("late", WaitStrategy.BLOCKING, 0);
             Dev a = new Dev("dev-a", image, shared);
             Dev b = new Dev("dev-b", image, shared)) {
            assertEquals(S_OK, roundTrip(a.q, a.kick, a.irq, T_IN));
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_IN));
            a.shrink();
            FaultPoints.arm(point);
            // B's request meets the error, and still completes: nothing of B was lost.
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_OUT));
            assertTrue(FaultPoints.fired(), "the error was thrown");
            assertTrue(a.device.isBroken(0), "A, whose file is shorter than its mapping, is quarantined");
            assertEquals(1, a.broken.size());
            assertTrue(a.broken.get(0).contains("a file now " + AREA + " bytes long"), a.broken.get(0));
            assertFalse(b.device.isBroken(0), "B is not quarantined: " + b.broken);
            assertEquals(List.of(), b.broken);
            assertEquals(1, b.reports.size(), "one report, by the device where it landed: " + b.reports);
            assertTrue(b.reports.get(0).contains("attributed by evidence"), b.reports.get(0));
            for (int i = 0; i < 8; i++) {
                assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, i % 2 == 0 ? T_OUT : T_IN));
            }
            // Both stop: A's drain and B's; B resumes afterwards.
            stopWithin(a.device);
            stopWithin(b.device);
            assertEquals(0, queue(b.device).inflight);
            b.device.startQueue(0);
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_IN));
        }
    }

    /**
     * The next frontend: a device's memory table was replaced after its file shrank (the old
     * frontend went, its table unmapped); the error lands in the queue now running on the new
     * table. Evidence points only at memory no running queue uses: nothing is quarantined.
     */
    @Test
    void aLateFaultOfAFrontendThatHasGoneQuarantinesNothing() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             Dev d = new Dev("dev", image, null)) {
            assertEquals(S_OK, roundTrip(d.q, d.kick, d.irq, T_IN));
            d.shrink();
            d.device.stopQueue(0);
            int fd2 = Memfd.create("next", 2 * AREA);
            try (GuestMemory next = GuestMemory.builder().addRegion(0, 2 * AREA, fd2, 0, 0, false).build()) {
                d.device.setMemory(next);
                d.memory.close(); // the old frontend's table: gone, its evidence kept
                SplitQueueDriver q2 = rings(next);
                d.device.configureQueue(0, SIZE, q2.descGpa(), q2.availGpa(), q2.usedGpa());
                d.device.startQueue(0);
                assertEquals(S_OK, roundTrip(q2, d.kick, d.irq, T_IN));
                FaultPoints.arm(FaultPoints.POP);
                assertEquals(S_OK, roundTrip(q2, d.kick, d.irq, T_OUT));
                assertTrue(FaultPoints.fired());
                assertFalse(d.device.isBroken(0), "the next frontend's queue is not quarantined: " + d.broken);
                assertEquals(1, d.reports.size(), d.reports.toString());
                assertTrue(d.reports.get(0).contains("nothing quarantined"), d.reports.get(0));
                assertEquals(S_OK, roundTrip(q2, d.kick, d.irq, T_IN));
                stopWithin(d.device);
            } finally {
                Native.libc().close(fd2);
            }
        }
    }

    /**
     * A device detached from the shared thread (closed) after its file shrank: its tables were
     * handed to the thread, so its fault, delivered late in the remaining device, is still
     * attributed to it, and quarantines nothing live.
     */
    @Test
    void aLateFaultOfADeviceDetachedFromTheSharedThreadQuarantinesNothing() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("detached", WaitStrategy.BLOCKING, 0);
             Dev b = new Dev("dev-b", image, shared)) {
            Dev a = new Dev("dev-a", image, shared);
            assertEquals(S_OK, roundTrip(a.q, a.kick, a.irq, T_IN));
            a.shrink();
            a.close(); // detached: gone from the shared thread, its table unmapped
            FaultPoints.arm(FaultPoints.POP);
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_OUT));
            assertTrue(FaultPoints.fired());
            assertFalse(b.device.isBroken(0), b.broken.toString());
            assertEquals(1, b.reports.size(), b.reports.toString());
            assertTrue(b.reports.get(0).contains("nothing quarantined"), b.reports.get(0));
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_IN));
        }
    }

    /** No file shrank (hugetlbfs out of pages looks like this): quarantined where it landed, as before, and said so. */
    @Test
    void withoutEvidenceTheQueueWhereItLandedIsQuarantinedAndTheReportSaysSo() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("none", WaitStrategy.BLOCKING, 0);
             Dev a = new Dev("dev-a", image, shared);
             Dev b = new Dev("dev-b", image, shared)) {
            assertEquals(S_OK, roundTrip(a.q, a.kick, a.irq, T_IN));
            FaultPoints.arm(FaultPoints.POP);
            add(b.q, T_IN);
            b.q.publishAvail();
            b.kick.signal();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!b.device.isBroken(0)) {
                assertTrue(System.nanoTime() < deadline, "B never quarantined");
                Thread.sleep(1);
            }
            assertFalse(a.device.isBroken(0));
            assertTrue(b.reports.get(0).contains("no evidence"), b.reports.toString());
            stopWithin(b.device);
            assertEquals(S_OK, roundTrip(a.q, a.kick, a.irq, T_IN));
        }
    }

    /**
     * The error lands in device B's reap (a completion of B's taken from the kernel and lost),
     * while A's file is the one that shrank. A is quarantined at once; B is not (a fault of
     * other memory), but it did lose a request: its drain finds what nothing can complete, and
     * only then quarantines B (needs-reset), gives the request up as LOST, and takes back both
     * the request's slot and the back end's (before, the back end's stayed out until close).
     */
    @Test
    void aCompletionLostToAnotherDevicesLateFaultIsGivenUpAtTheDrainAndItsBackEndSlotComesBack() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("lost", WaitStrategy.BLOCKING, 0);
             Dev a = new Dev("dev-a", image, shared);
             Dev b = new Dev("dev-b", image, shared)) {
            assertEquals(S_OK, roundTrip(a.q, a.kick, a.irq, T_IN));
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_IN));
            a.shrink();
            FaultPoints.arm(FaultPoints.REAP_TAKEN);
            add(b.q, T_IN);
            b.q.publishAvail();
            b.kick.signal();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!FaultPoints.fired() || !a.device.isBroken(0)) {
                assertTrue(System.nanoTime() < deadline, "the reap never met the error, or A never quarantined");
                Thread.sleep(1);
            }
            assertFalse(b.device.isBroken(0), "B is not quarantined for A's fault: " + b.broken);
            stopWithin(b.device);
            assertTrue(b.device.isBroken(0), "B lost a request: needs-reset after all");
            assertTrue(b.broken.get(0).contains("completion was lost"), b.broken.toString());
            assertEquals(1, b.device.counters(0).get(QueueCounters.LOST));
            assertEquals(0, queue(b.device).inflight);
            IoThread t = thread(b.device);
            assertEquals(t.backend().depth(), t.backend().freeSlots(), "the back end's slot of the lost completion came back");
            RequestPool pool = t.dispatcherPool();
            assertEquals(pool.size(), pool.available(), "every request slot back in the pool");
        }
    }

    private static IoThread thread(BlockDevice device) throws ReflectiveOperationException {
        java.lang.reflect.Field threads = BlockDevice.class.getDeclaredField("threadOfQueue");
        threads.setAccessible(true);
        return ((IoThread[]) threads.get(device))[0];
    }

    private static void stopWithin(BlockDevice device) throws Exception {
        CompletableFuture.supplyAsync(() -> device.stopQueue(0), r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
    }

    private static DeviceQueue queue(BlockDevice device) throws ReflectiveOperationException {
        java.lang.reflect.Method m = BlockDevice.class.getDeclaredMethod("queue", int.class);
        m.setAccessible(true);
        return (DeviceQueue) m.invoke(device, 0);
    }

    private static long lastStatus;

    /** Adds [header][4 KiB data][status] in the ring's area (the first half of the file). */
    private static int add(SplitQueueDriver q, int type) {
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

    private static byte roundTrip(SplitQueueDriver q, EventFd kick, EventFd irq, int type) {
        int head = add(q, type);
        long status = lastStatus;
        q.publishAvail();
        kick.signal();
        assertEquals(head, q.awaitUsed(irq, 10_000));
        return UnsafeApi.getByte(q.hostAddress(status, 1));
    }
}
