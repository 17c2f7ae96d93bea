package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.GatedBackend;

/**
 * A device detached late from a shared thread (its close(500) gave up while the thread was stuck
 * in a neighbour's round) is closed when that round ends; a back end's close waits for its stuck
 * I/O whatever the deadline (a qcow2 driver at least its own-work floor, 200 ms per chain level;
 * NBD its helper's join), so the close must not run on the shared thread: the neighbours would
 * stall that long (rev14c M1). Here the frozen qcow2 disk's close is held until the neighbour's
 * read completed: on the shared thread that read could never complete.
 */
class LateDetachClosesOffSharedThreadTest {
    @TempDir
    Path dir;

    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aLateDetachedQcow2MemberIsClosedOffTheSharedThreadWhileTheNeighbourIsServed() throws Exception {
        byte[] data = new byte[4 << 20];
        Arrays.fill(data, (byte) 1);
        Path raw = dir.resolve("data.raw");
        Files.write(raw, data);
        Path img = dir.resolve("disk.qcow2");
        Process p = new ProcessBuilder("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
                "-o", "cluster_size=65536", raw.toString(), img.toString()).inheritIO().start();
        assertEquals(0, p.waitFor());
        DriverFactory qcow2 = Qcow2.factory(img, BackendKind.IO_URING, Qcow2Options.defaults());
        AtomicReference<GatedBackend> gate = new AtomicReference<>();
        AtomicBoolean holdClose = new AtomicBoolean();
        AtomicReference<Thread> closedOn = new AtomicReference<>();
        CountDownLatch neighbourServed = new CountDownLatch(1);
        DriverFactory gated = depth -> {
            BlockDriver d = qcow2.open(depth);
            try {
                java.lang.reflect.Field f = d.getClass().getDeclaredField("io");
                f.setAccessible(true);
                GatedBackend g = new GatedBackend((IoBackend) f.get(d), true);
                f.set(d, new ForwardingBackend(g) {
                    @Override
                    public int awaitCompletions(int timeoutMs) {
                        // Only a drain waits here (at close, for the frozen read): rounds use epoll.
                        if (holdClose.get() && closedOn.compareAndSet(null, Thread.currentThread())) {
                            try { // the close waits for its stuck I/O (as the qcow2 floor or an NBD join would)
                                neighbourServed.await(20, TimeUnit.SECONDS);
                            } catch (InterruptedException e) {
                                Thread.currentThread().interrupt();
                            }
                        }
                        return super.awaitCompletions(timeoutMs);
                    }
                });
                gate.set(g);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException(e);
            }
            return d;
        };
        CountDownLatch inSubmit = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        AtomicBoolean stall = new AtomicBoolean();
        Tuning blocking = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build();
        try (SharedIoThread shared = new SharedIoThread("shared-rev14c", WaitStrategy.BLOCKING, 0)) {
            try (DeviceRig a = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(blocking).ioThreads(shared)
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
                 DeviceRig b = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(blocking).ioThreads(shared)
                         .drivers(gated, 4 << 20).build()) {
                long bufA = a.buffer(0, 4096);
                long bufB = b.buffer(0, 4096);
                assertEquals(S_OK, b.roundTrip(0, T_IN, 0, bufB, 4096, true));
                assertEquals(S_OK, a.roundTrip(0, T_IN, 0, bufA, 4096, true));
                gate.get().set(false); // b's disk freezes
                b.add(0, T_IN, 1024, bufB, 4096, true);
                b.kick(0);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                while (gate.get().inFlight() == 0) {
                    assertTrue(System.nanoTime() < deadline, "b's read never reached its disk");
                    Thread.sleep(1);
                }
                stall.set(true);
                a.add(0, T_IN, 0, bufA, 4096, true);
                a.kick(0);
                assertTrue(inSubmit.await(30, TimeUnit.SECONDS));
                assertFalse(b.device.close(500), "b cannot drain while the shared thread is stuck");
                assertFalse(b.device.quiesced());
                holdClose.set(true);
                stall.set(false);
                release.countDown();
                // a's read, stuck in submit, completes once its round runs again; b's close, held
                // until then, must not run on the shared thread.
                a.awaitUsed(0, 10_000);
                assertEquals(S_OK, a.roundTrip(0, T_IN, 8, bufA, 4096, true));
                neighbourServed.countDown();
                long qdeadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (!b.device.quiesced()) {
                    assertTrue(System.nanoTime() < qdeadline);
                    Thread.sleep(5);
                }
                Thread closer = closedOn.get();
                assertNotNull(closer, "b's driver was closed without waiting for its frozen read");
                assertNotSame(shared.thread(), closer, "b was closed on the shared thread");
                assertTrue(closer.getName().startsWith("vblk-late-detach-close"), closer.getName());
            }
        }
    }
}
