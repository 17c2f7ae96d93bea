package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.sys.FaultPoints;

/**
 * rev16c concern: a pending command is given up after {@link PendingCommands#MAX_FAILURES}
 * throws, and every throw counted, also a late fault that belongs to another device on the same
 * shared thread. Now a fault attributed by evidence to other memory only does not count: here
 * B's command takes A's fault (A's file really cut short: A is quarantined) and then fails
 * {@code PendingCommands.MAX_FAILURES - 1} times of its own; it runs once more and finishes instead
 * of being given up.
 */
class PendingCommandForeignFaultTest {
    @TempDir
    Path dir;

    @Test
    void aFaultAttributedToAnotherDeviceDoesNotCountAgainstACommand() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("foreign", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            assertEquals(S_OK, a.roundTrip(T_IN));
            assertEquals(S_OK, b.roundTrip(T_IN));
            a.shrink();
            AtomicInteger runs = new AtomicInteger();
            AtomicReference<Throwable> abandoned = new AtomicReference<>();
            CountDownLatch over = new CountDownLatch(1);
            b.thread().submitCommand(new InboxEvent.Command() {
                @Override
                public boolean run(IoThread t) {
                    int run = runs.incrementAndGet();
                    if (run == 1) {
                        throw new InternalError(FaultPoints.MESSAGE); // A's late fault lands here
                    }
                    if (run <= PendingCommands.MAX_FAILURES) {
                        throw new IllegalStateException("B's own failure " + run);
                    }
                    over.countDown();
                    return true;
                }

                @Override
                public void abandon(Throwable cause) {
                    abandoned.set(cause);
                    over.countDown();
                }
            });
            assertTrue(over.await(30, TimeUnit.SECONDS), "the command neither finished nor was given up");
            assertTrue(a.device.isBroken(0), "A's fault attributed to A: " + a.reports + b.reports);
            assertNull(abandoned.get(), "B's command given up after " + runs.get() + " runs, one of them A's fault");
            assertEquals(PendingCommands.MAX_FAILURES + 1, runs.get());
            assertFalse(b.reports.isEmpty() && a.reports.isEmpty());
        }
    }
}
