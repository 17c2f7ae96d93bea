package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.GatedBackend;
import io.vblk.testkit.RingTamperer;

/**
 * Devices sharing I/O threads ({@link SharedIoThread}): no thread per device, and one device's
 * quarantined ring or throttle never stalls another device on the same thread.
 */
class SharedIoThreadTest {
    @TempDir
    Path dir;

    private static Tuning blocking() {
        return Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build();
    }

    private static void quiesce(DeviceRig a) throws InterruptedException {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (!a.device.isBroken(0) && System.nanoTime() < deadline) {
            Thread.sleep(1);
        }
    }

    @ParameterizedTest
    @EnumSource(value = WaitStrategy.class, names = {"BLOCKING", "ADAPTIVE", "YIELDING"})
    void aQuarantinedRingStopsOnlyItsOwnDevice(WaitStrategy wait) throws Exception {
        try (SharedIoThread shared = new SharedIoThread("shared-q", wait, 50_000)) {
            try (DeviceRig a = DeviceRig.builder(dir, BackendKind.IO_URING).ioThreads(shared).build();
                 DeviceRig b = DeviceRig.builder(dir, BackendKind.IO_URING).ioThreads(shared).build()) {
                assertEquals(2, shared.memberCount());
                long bufA = a.buffer(0, 4096);
                long bufB = b.buffer(0, 4096);
                assertEquals(S_OK, a.roundTrip(0, T_IN, 0, bufA, 4096, true));
                // 2.7.13.3: avail.idx may run at most queue-size entries ahead of the device.
                RingTamperer.of(a.driver(0)).writeAvailIdx(a.driver(0).availIdx() + a.driver(0).size() + 1);
                a.kicks[0].signal();
                quiesce(a);
                assertTrue(a.device.isBroken(0), "device a's queue quarantined");
                for (int i = 0; i < 200; i++) {
                    assertEquals(S_OK, b.roundTrip(0, i % 2 == 0 ? T_OUT : T_IN, i, bufB, 4096, i % 2 == 1));
                }
                assertFalse(b.device.isBroken(0), "device b on the same thread unaffected");
            }
            assertEquals(0, shared.memberCount(), "closing the devices detached them");
        }
    }

    @Test
    void aThrottledDeviceNeverHoldsUpItsNeighbour() throws Exception {
        try (SharedIoThread shared = new SharedIoThread("shared-t", WaitStrategy.ADAPTIVE, 50_000)) {
            Tuning slow = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).iopsLimit(1).burstMs(0).build();
            try (DeviceRig a = DeviceRig.builder(dir, BackendKind.NULL).tuning(slow).ioThreads(shared).build();
                 DeviceRig b = DeviceRig.builder(dir, BackendKind.NULL).tuning(blocking()).ioThreads(shared).build()) {
                long bufA = a.buffer(0, 4096);
                for (int i = 0; i < 16; i++) {
                    a.add(0, T_IN, i, bufA, 4096, true);
                }
                a.kick(0); // 16 requests at 1 per second: device a is busy for 16 s
                long bufB = b.buffer(0, 4096);
                for (int i = 0; i < 300; i++) {
                    assertEquals(S_OK, b.roundTrip(0, T_IN, i, bufB, 4096, true));
                }
                long aDone = a.device.counters(0).get(QueueCounters.COMPLETIONS);
                assertTrue(aDone < 16, "device a is still held back by its own limit: " + aDone);
                assertTrue(a.device.counters(0).get(QueueCounters.THROTTLED) > 0);
                a.device.setLimits(0, 0); // lifting the limit at run time lets the rest through
                for (int i = 0; i < 16 - aDone; i++) {
                    a.awaitUsed(0, 10_000);
                }
                assertEquals(16, a.device.counters(0).get(QueueCounters.COMPLETIONS));
            }
        }
    }

    /** A fault under one device (its image cut short underneath: I/O errors) leaves its neighbour alone. */
    @Test
    void aFaultingImageFailsOnlyItsOwnRequests() throws Exception {
        try (SharedIoThread shared = new SharedIoThread("shared-f", WaitStrategy.ADAPTIVE, 50_000);
             DeviceRig a = DeviceRig.builder(dir, BackendKind.IO_URING).ioThreads(shared).build();
             DeviceRig b = DeviceRig.builder(dir, BackendKind.IO_URING).ioThreads(shared).build()) {
            long bufA = a.buffer(0, 4096);
            long bufB = b.buffer(0, 4096);
            assertEquals(S_OK, a.roundTrip(0, T_IN, 64, bufA, 4096, true));
            try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(a.imagePath.toFile(), "rw")) {
                f.setLength(0); // the image file cut short under the device
            }
            for (int i = 0; i < 50; i++) {
                assertEquals(BlkRequestDescriptor.S_IOERR, a.roundTrip(0, T_IN, 64 + 8 * i, bufA, 4096, true));
                assertEquals(S_OK, b.roundTrip(0, i % 2 == 0 ? T_OUT : T_IN, 8 * i, bufB, 4096, i % 2 == 1));
            }
            assertFalse(a.device.isBroken(0), "I/O errors are answered, not a reason to stop the queue");
            assertEquals(50, a.device.counters(0).get(QueueCounters.ERRORS));
            assertEquals(0, b.device.counters(0).get(QueueCounters.ERRORS));
        }
    }

    @Test
    void manyDevicesOnOneThreadStartNoThreadOfTheirOwn() throws Exception {
        List<DeviceRig> rigs = new ArrayList<>();
        // Only this test's rigs count: a rig of an earlier test may have left a thread that is
        // still ending (a bounded close gives up on a thread stuck in the kernel), named the same.
        java.util.Set<Thread> earlier = java.util.Set.copyOf(Thread.getAllStackTraces().keySet());
        try (SharedIoThread shared = new SharedIoThread("shared-n", WaitStrategy.BLOCKING, 0)) {
            try {
                for (int i = 0; i < 8; i++) {
                    rigs.add(DeviceRig.builder(dir, BackendKind.NULL).imageBytes(1 << 20).ioThreads(shared).build());
                }
                long own = Thread.getAllStackTraces().keySet().stream().filter(t -> t.getName().startsWith("rig-") && !earlier.contains(t))
                        .count();
                assertEquals(0, own, "no device started a thread of its own");
                assertEquals(8, shared.memberCount());
                for (int round = 0; round < 20; round++) {
                    for (DeviceRig r : rigs) {
                        assertEquals(S_OK, r.roundTrip(0, T_IN, round, r.buffer(0, 4096), 4096, true));
                    }
                }
                // A device leaves while its neighbours keep going.
                rigs.remove(0).close();
                assertEquals(7, shared.memberCount());
                for (DeviceRig r : rigs) {
                    assertEquals(S_OK, r.roundTrip(0, T_IN, 0, r.buffer(0, 4096), 4096, true));
                }
                assertThrows(IllegalStateException.class, shared::close, "refused while devices use it");
            } finally {
                for (DeviceRig r : rigs) {
                    r.close();
                }
            }
        }
    }

    @Test
    void pinnedToACpuAndRefusedForOneThatIsNotThere() throws Exception {
        try (SharedIoThread pinned = new SharedIoThread("shared-p", WaitStrategy.BLOCKING, 0, new int[] {0});
             DeviceRig r = DeviceRig.builder(dir, BackendKind.NULL).ioThreads(pinned).build()) {
            assertEquals(S_OK, r.roundTrip(0, T_IN, 0, r.buffer(0, 4096), 4096, true));
            String status = java.nio.file.Files.readString(Path.of("/proc/self/task/" + tid(pinned) + "/status"));
            assertTrue(status.contains("Cpus_allowed_list:\t0\n"), status);
        }
        assertThrows(IllegalArgumentException.class, () -> new SharedIoThread("x", WaitStrategy.BLOCKING, 0, new int[] {1023}));
        assertThrows(IllegalArgumentException.class, () -> new SharedIoThread("x", WaitStrategy.BLOCKING, 0, new int[] {1024}));
    }

    /** The kernel thread id of the shared thread, found by its name in /proc. */
    private static String tid(SharedIoThread t) throws java.io.IOException {
        try (var tasks = java.nio.file.Files.list(Path.of("/proc/self/task"))) {
            for (Path task : (Iterable<Path>) tasks::iterator) {
                if (java.nio.file.Files.readString(task.resolve("comm")).trim().equals(t.name())) {
                    return task.getFileName().toString();
                }
            }
        }
        throw new AssertionError("no task named " + t.name());
    }

    @Test
    void dedicatedCompletionThreadsAreRefused() {
        try (SharedIoThread shared = new SharedIoThread("shared-d", WaitStrategy.BLOCKING, 0)) {
            Tuning dedicated = Tuning.builder().threadingMode(ThreadingMode.DEDICATED).build();
            assertThrows(IllegalArgumentException.class,
                    () -> DeviceRig.builder(dir, BackendKind.NULL).tuning(dedicated).ioThreads(shared).build());
            assertEquals(0, shared.memberCount());
        }
    }

    /**
     * The deep-queue rule on a shared thread: the operations in flight are summed over its
     * members, so two devices with 4 reads in flight each (neither deep on its own) make a wait
     * that goes to the kernel at once; one device's 4 alone still poll.
     */
    @Test
    void aDeepQueueSummedOverItsDevicesSleepsAtOnce() throws Exception {
        GatedBackend[] gates = new GatedBackend[2];
        int half = AdaptivePollIdleStrategy.DEEP_IN_FLIGHT / 2;
        try (SharedIoThread shared = new SharedIoThread("shared-deep", WaitStrategy.ADAPTIVE, 50_000)) {
            try (DeviceRig a = DeviceRig.builder(dir, BackendKind.IO_URING).ioThreads(shared)
                         .backends(f -> depth -> gates[0] = new GatedBackend(f.open(depth), false)).build();
                 DeviceRig b = DeviceRig.builder(dir, BackendKind.IO_URING).ioThreads(shared)
                         .backends(f -> depth -> gates[1] = new GatedBackend(f.open(depth), false)).build()) {
                AdaptivePollIdleStrategy idle = (AdaptivePollIdleStrategy) shared.idleStrategy();
                try {
                    submitReads(a, half);
                    awaitSleeping(shared, a, half);
                    assertEquals(0, idle.deepWaits(), half + " in flight on one device: the waits poll");
                    submitReads(b, half);
                    awaitSleeping(shared, b, half);
                    long deadline = System.nanoTime() + 10_000_000_000L;
                    while (idle.deepWaits() == 0 && System.nanoTime() < deadline) {
                        Thread.sleep(1);
                    }
                    assertTrue(idle.deepWaits() > 0, 2 * half + " in flight over two devices: a wait went to the kernel at once");
                } finally {
                    gates[0].open(); // before the rigs close: they drain
                    gates[1].open();
                }
                for (int i = 0; i < half; i++) {
                    a.awaitUsed(0, 10_000);
                    b.awaitUsed(0, 10_000);
                }
            }
        }
    }

    /**
     * Session 13's closing note: BlockDevice.close(ms) of a device on a shared thread waited up
     * to 30 s (the shared thread's change wait) to be detached when the thread was stuck in
     * another member's round (its back end blocking in a call), then threw. Now the detach waits
     * only what is left of the deadline: close(500) returns undrained while the round is stuck,
     * the device is not quiesced (the shared thread may still touch it), and once the round ends
     * the shared thread detaches it and closes its back end, and the device is quiesced. Real
     * io_uring rings on real files; device a's back end blocks in submit as a stuck call would.
     * The waits are hang guards, not timed assertions.
     */
    @Test
    @Timeout(value = 120, unit = java.util.concurrent.TimeUnit.SECONDS)
    void closeWithADeadlineKeepsToItWhileTheSharedThreadIsStuckInANeighboursRound() throws Exception {
        java.util.concurrent.CountDownLatch inSubmit = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.atomic.AtomicBoolean stall = new java.util.concurrent.atomic.AtomicBoolean();
        try (SharedIoThread shared = new SharedIoThread("shared-stuck", WaitStrategy.BLOCKING, 0)) {
            try (DeviceRig a = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(blocking()).ioThreads(shared)
                         .backends(f -> depth -> new ForwardingBackend(f.open(depth)) {
                             @Override
                             public int submit() {
                                 if (stall.get()) {
                                     inSubmit.countDown();
                                     try {
                                         release.await();
                                     } catch (InterruptedException e) {
                                         Thread.currentThread().interrupt();
                                     }
                                 }
                                 return super.submit();
                             }
                         }).build();
                 DeviceRig b = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(blocking()).ioThreads(shared).build()) {
                long bufB = b.buffer(0, 4096);
                assertEquals(S_OK, b.roundTrip(0, T_IN, 0, bufB, 4096, true));
                long bufA = a.buffer(0, 4096);
                try {
                    stall.set(true);
                    a.add(0, T_IN, 0, bufA, 4096, true);
                    a.kick(0);
                    assertTrue(inSubmit.await(30, java.util.concurrent.TimeUnit.SECONDS), "a's round reached its back end");
                    java.util.concurrent.CompletableFuture<Boolean> closed = new java.util.concurrent.CompletableFuture<>();
                    Thread closer = new Thread(() -> {
                        try {
                            closed.complete(b.device.close(500));
                        } catch (RuntimeException e) {
                            closed.completeExceptionally(e);
                        }
                    }, "closer");
                    closer.setDaemon(true);
                    closer.start();
                    try {
                        assertFalse(closed.get(20, java.util.concurrent.TimeUnit.SECONDS),
                                "b's queue cannot drain while its thread is stuck in a's round");
                    } catch (java.util.concurrent.TimeoutException e) {
                        StringBuilder where = new StringBuilder();
                        for (StackTraceElement at : closer.getStackTrace()) {
                            where.append("\n  at ").append(at);
                        }
                        throw new AssertionError("close(500) still waits after 20 s for the shared thread's round:" + where);
                    }
                    assertFalse(b.device.quiesced(), "the shared thread may still touch b: not quiesced");
                    assertEquals(2, shared.memberCount(), "b leaves only when the round ends");
                } finally {
                    stall.set(false);
                    release.countDown();
                }
                long deadline = System.nanoTime() + 30_000_000_000L;
                while (!b.device.quiesced() || shared.memberCount() != 1) {
                    assertTrue(System.nanoTime() < deadline, "b was never detached and closed after the round ended");
                    Thread.sleep(5);
                }
                a.awaitUsed(0, 10_000);
                assertEquals(S_OK, a.roundTrip(0, T_IN, 8, bufA, 4096, true), "a still served");
            }
            assertEquals(0, shared.memberCount());
        }
    }

    /** iothread.list's busy_fraction: a thread asleep in epoll now is idle, not busy (it read 1.0). */
    @Test
    void anIdleSharedThreadReadsIdle() throws Exception {
        try (SharedIoThread shared = new SharedIoThread("shared-idle", WaitStrategy.ADAPTIVE, 50_000);
             DeviceRig a = DeviceRig.builder(dir, BackendKind.NULL).tuning(blocking()).ioThreads(shared).build()) {
            long buf = a.buffer(0, 4096);
            for (int i = 0; i < 10; i++) {
                assertEquals(S_OK, a.roundTrip(0, T_IN, i, buf, 4096, true));
            }
            Thread.sleep(1000);
            assertTrue(shared.isSleeping(), "idle shared thread asleep in epoll");
            double busy = shared.busyFraction();
            assertTrue(busy < 0.2, "idle for 1 s, busy fraction " + busy);
        }
    }

    private static void submitReads(DeviceRig rig, int count) {
        long buf = rig.buffer(0, 4096L * count);
        for (int i = 0; i < count; i++) {
            rig.add(0, T_IN, 8L * i, buf + 4096L * i, 4096, true);
        }
        rig.kick(0);
    }

    /** Waits until {@code rig} took {@code requests} and the shared thread sleeps in epoll. */
    private static void awaitSleeping(SharedIoThread shared, DeviceRig rig, long requests) throws InterruptedException {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while ((rig.device.counters(0).get(QueueCounters.REQUESTS) < requests || !shared.isSleeping())
                && System.nanoTime() < deadline) {
            Thread.sleep(1);
        }
        assertTrue(shared.isSleeping(), "shared thread asleep with the reads in flight");
    }
}
