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
 * An attacker against attribution by evidence (GuestFaults, FaultEvidence): one shrink of
 * device A's file is one late fault, delivered once. Its evidence stays visible, though, for as
 * long as A's table is remembered (a quarantined A that is never reset, or a frontend that went:
 * the last 8 tables). Before the fix every later fault on the same OS thread, whatever its
 * cause, was "attributed" to that stale evidence: nothing was quarantined, the queue where it
 * landed was spared and popped its chain again. A queue whose OWN memory faults without
 * evidence (hugetlbfs out of pages, a full tmpfs under a sparse file: its file keeps its size)
 * then faulted, was spared and popped again for ever (a busy loop on a chain that never pops,
 * one fault report per round into the daemon's log), or, landing outside the pop loop, kept
 * being trusted. Evidence now attributes once: a second fault with only spent evidence is
 * handled as a fault without evidence (quarantined where it landed). Deterministic through
 * {@link FaultPoints}, with A's memfd really truncated, as in LateFaultAttributionTest.
 */
class SpentEvidenceAttackTest {
    private static final long AREA = 4L << 20;
    private static final int SIZE = 16;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.POP, FaultPoints.SUBMIT_RETURNED})
    void aSecondFaultWithOnlySpentEvidenceQuarantinesWhereItLands(int point) throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("spent", WaitStrategy.BLOCKING, 0);
             Dev a = new Dev("dev-a", image, shared);
             Dev b = new Dev("dev-b", image, shared)) {
            assertEquals(S_OK, roundTrip(a.q, a.kick, a.irq, T_IN));
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_IN));
            a.shrink();
            // A's one late fault lands in B: attributed to A, B spared (LateFaultAttributionTest).
            FaultPoints.arm(point);
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_OUT));
            assertTrue(FaultPoints.fired());
            assertTrue(a.device.isBroken(0));
            assertFalse(b.device.isBroken(0), b.broken.toString());
            // Now B's own memory faults (no evidence of its own); A's evidence is still there,
            // but spent: B must be quarantined, not spared again.
            FaultPoints.arm(point);
            add(b.q, T_IN);
            b.q.publishAvail();
            b.kick.signal();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!FaultPoints.fired() || (!b.device.isBroken(0) && b.q.reap() < 0)) {
                assertTrue(System.nanoTime() < deadline, "the second fault never fired");
                Thread.sleep(1);
            }
            assertTrue(b.device.isBroken(0), "B's second fault had only spent evidence, yet B was spared: " + b.reports);
            assertTrue(b.reports.size() <= 2, "one report per fault: " + b.reports);
            stopWithin(b.device);
        }
    }

    /**
     * The other side of spending evidence: attacker A, quarantined for its shrink, is reset and
     * started again on the same (still short) table, and faults again; that fault lands in
     * victim B. A queue started on the table made its evidence fresh: A is quarantined again and
     * B is spared, as the first time. (Were the spent mark sticky, a reset attacker could get
     * its victim quarantined with every later fault.)
     */
    @org.junit.jupiter.api.Test
    void anAttackerStartedAgainOnItsShortTableIsBlamedAgainAndItsVictimSpared() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("fresh", WaitStrategy.BLOCKING, 0);
             Dev a = new Dev("dev-a", image, shared);
             Dev b = new Dev("dev-b", image, shared)) {
            assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_IN));
            a.shrink();
            for (int round = 0; round < 3; round++) {
                FaultPoints.arm(FaultPoints.POP);
                assertEquals(S_OK, roundTrip(b.q, b.kick, b.irq, T_OUT));
                assertTrue(FaultPoints.fired());
                assertTrue(a.device.isBroken(0), "round " + round + ": A blamed");
                assertFalse(b.device.isBroken(0), "round " + round + ": B spared: " + b.reports);
                stopWithin(a.device);
                a.device.clearQuarantine(0);
                a.device.startQueue(0); // same table, file still short
            }
        }
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
            device = BlockDevice.builder(config, BackendFactory.of(BackendKind.IO_URING, image)).memory(memory)
                    .tuning(tuning).listener(new DeviceListener() {
                        @Override
                        public void queueBroken(int queue, String reason) {
                            broken.add(reason);
                        }

                        @Override
                        public void faultAttributed(String report) {
                            reports.add(report);
                        }
                    }).name(name).ioThreads(shared).build();
            device.negotiate(config.offeredFeatures() & ~BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX));
            q = SplitQueueDriver.builder(memory).size(SIZE).eventIdx(false).area(0, AREA).build();
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

    private static void stopWithin(BlockDevice device) throws Exception {
        CompletableFuture.supplyAsync(() -> device.stopQueue(0), r -> new Thread(r).start()).get(30, TimeUnit.SECONDS);
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
