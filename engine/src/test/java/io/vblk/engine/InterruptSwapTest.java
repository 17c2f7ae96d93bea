package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;

/**
 * Issue 10, bug 5: when {@link BlockDevice#setInterrupt} returns, the old interrupt is never
 * signalled again, in dedicated mode too, where the completion thread signals. Before the fix
 * the completion thread kept signalling the old one (a VMM had closed its eventfd: the device
 * wrote into a reused descriptor number).
 */
class InterruptSwapTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(ThreadingMode.class)
    void setInterruptWaitsForASignalInProgressAndTheOldOneIsNeverSignalledAfter(ThreadingMode mode) throws Exception {
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).eventIdx(false).tuning(tuning).build()) {
            CountDownLatch inSignal = new CountDownLatch(1);
            CountDownLatch proceed = new CountDownLatch(1);
            AtomicInteger oldAfterSwap = new AtomicInteger();
            boolean[] retired = new boolean[1];
            Interrupt old = () -> {
                if (retired[0]) {
                    oldAfterSwap.incrementAndGet();
                }
                inSignal.countDown();
                try {
                    proceed.await(10, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            };
            AtomicInteger fresh = new AtomicInteger();
            rig.device.setInterrupt(0, old);
            long buf = rig.buffer(0, 4096);
            int first = rig.add(0, T_IN, 0, buf, 4096, true);
            rig.kick(0);
            assertTrue(inSignal.await(10, TimeUnit.SECONDS), "the completion signals the interrupt");
            // The signalling thread is inside old.signal(): the swap must wait for it.
            CompletableFuture<Void> swap = CompletableFuture.runAsync(() -> rig.device.setInterrupt(0, () -> {
                fresh.incrementAndGet();
                rig.interrupts[0].signal();
            }));
            Thread.sleep(200);
            boolean returnedEarly = swap.isDone();
            proceed.countDown();
            assertFalse(returnedEarly, "setInterrupt returned while the old interrupt was being signalled");
            swap.get(10, TimeUnit.SECONDS);
            retired[0] = true;
            assertEquals(first, rig.awaitUsed(0, 10_000));
            for (int i = 0; i < 50; i++) {
                assertEquals(S_OK, rig.roundTrip(0, T_IN, i, buf, 4096, true));
            }
            assertEquals(0, oldAfterSwap.get(), "old interrupt signalled after setInterrupt returned");
            assertTrue(fresh.get() > 0);
        }
    }
}
