package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_IOERR;
import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.testkit.RingTamperer;

/**
 * What an embedding VMM may do with the public API without breaking the process (a reviewer's
 * program built from the README and javadoc): descriptors it closes, control calls from
 * callbacks, memory closed first, resize, calls after close, a config the disk cannot serve.
 */
class EmbedderContractTest {
    private static final long BYTES = 1L << 20;

    @TempDir
    Path dir;

    @Test
    void aClosedIrqfdIsNeverWrittenIntoTheFileThatReusesItsNumber() throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).build()) {
            EventFd irqfd = EventFd.create(true);
            rig.device.setInterrupt(0, Interrupt.of(irqfd));
            int number = irqfd.fd();
            irqfd.close();
            try (EventFd other = EventFd.create(true)) { // the host's next file: an eventfd we can read
                assumeTrue(other.fd() == number, "the kernel handed out another number");
                long buf = rig.buffer(0, 4096);
                for (int i = 0; i < 4; i++) {
                    assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
                }
                assertEquals(-Errno.EAGAIN, other.read(), "the device wrote a descriptor it did not own");
            }
        }
    }

    @Test
    void aKickEventFdMustBeOpenWhenSetAndIsTheDevicesOwnCopyAfter() throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).build()) {
            EventFd closed = EventFd.create(true);
            closed.close();
            assertThrows(IllegalStateException.class, () -> rig.device.setKick(0, closed));
            EventFd kick = rig.kicks[0].duplicate(); // the guest's kicks reach it
            rig.device.setKick(0, kick);
            kick.close(); // the caller's: the device watches its own copy
            long buf = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
        }
    }

    @Test
    void aControlCallFromAnInterruptFailsInsteadOfDeadlockingTheDevice() throws Exception {
        CompletableFuture<Throwable> seen = new CompletableFuture<>();
        DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).build();
        try {
            EventFd call = rig.interrupts[0];
            rig.device.setInterrupt(0, () -> {
                if (!seen.isDone()) {
                    try {
                        rig.device.stopQueue(0);
                        seen.complete(null);
                    } catch (RuntimeException e) {
                        seen.complete(e);
                    }
                }
                call.signal();
            });
            long buf = rig.buffer(0, 4096);
            rig.add(0, T_IN, 0, buf, 4096, true);
            rig.kick(0);
            Throwable e = seen.get(60, TimeUnit.SECONDS); // before the fix: never (the I/O thread waited for itself)
            assertTrue(e instanceof IllegalStateException, "got " + e);
            assertTrue(e.getMessage().contains("another thread"), e.getMessage());
            rig.awaitUsed(0, 10_000);
            assertTrue(rig.device.isRunning(0), "the refused stop changed nothing");
        } finally {
            rig.close(); // returns: no I/O thread is stuck
        }
    }

    @Test
    void aResetFromAListenerCallbackFailsInsteadOfDeadlockingTheDevice() throws Exception {
        CompletableFuture<Throwable> seen = new CompletableFuture<>();
        AtomicReference<BlockDevice> device = new AtomicReference<>();
        DeviceListener listener = new DeviceListener() {
            @Override
            public void queueBroken(int queue, String reason) {
                try {
                    device.get().reset();
                    seen.complete(null);
                } catch (RuntimeException e) {
                    seen.complete(e);
                }
            }
        };
        DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).listener(listener).build();
        try {
            device.set(rig.device);
            RingTamperer.of(rig.driver(0)).writeAvailIdx(rig.driver(0).availIdx() + rig.driver(0).size() + 1);
            rig.kicks[0].signal();
            Throwable e = seen.get(60, TimeUnit.SECONDS); // before the fix: never
            assertTrue(e instanceof IllegalStateException, "got " + e);
            rig.device.reset(); // from a control thread: fine
            assertFalse(rig.device.isBroken(0));
        } finally {
            rig.close();
        }
    }

    @Test
    void aRingLargerThanTheConfigsQueueSizeIsRefused() throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).config(b -> b.queueSize(64)).build()) {
            rig.device.stopQueue(0);
            assertThrows(IllegalArgumentException.class, () -> rig.device.configureQueue(0, 128, 0, 4096, 8192));
            rig.device.configureQueue(0, 32, 0, 4096, 8192); // smaller: fine
        }
    }

    @Test
    void guestMemoryClosedBeforeTheDeviceStaysMappedUntilTheDeviceLetsGo() throws Exception {
        DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).build();
        long buf = rig.buffer(0, 4096);
        rig.memory.close(); // the embedder's mistake: before the device
        assertFalse(rig.memory.isUnmapped(), "unmapped under a running device");
        assertEquals(1, rig.memory.users().size(), "the device is named as the user: " + rig.memory.users());
        assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true)); // before the fix: SIGSEGV
        rig.device.close();
        assertTrue(rig.memory.isUnmapped(), "unmapped once the device let go");
        assertThrows(IllegalStateException.class, () -> rig.memory.attach(this));
        rig.close();
    }

    @Test
    void rawOnlineResizeThroughTheReadmeFactoryAndNotBeyondTheDisk() throws Exception {
        AtomicInteger changes = new AtomicInteger();
        DeviceListener listener = new DeviceListener() {
            @Override
            public void configChanged(BlkConfig config) {
                changes.incrementAndGet();
            }
        };
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).listener(listener).build()) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> rig.device.resize(2 * BYTES));
            assertTrue(e.getMessage().contains("beyond the disk"), e.getMessage());
            assertEquals(0, changes.get(), "nothing told to the guest");
            assertEquals(BYTES / 512, rig.device.config().capacitySectors());
            rig.device.resizeDrivers(2 * BYTES); // BackendFactory.of: grows the image file
            assertEquals(2 * BYTES, rig.image.sizeBytes());
            rig.device.resize(2 * BYTES);
            assertEquals(1, changes.get());
            long buf = rig.buffer(0, 4096);
            long beyond = BYTES / 512 + 8;
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, beyond, buf, 4096, false));
            assertEquals(S_OK, rig.roundTrip(0, T_IN, beyond, buf, 4096, true));
            assertEquals(S_IOERR, rig.roundTrip(0, T_IN, 2 * BYTES / 512, buf, 4096, true));
        }
    }

    @Test
    void everyControlCallAndKickFailsFastAfterClose() throws Exception {
        AtomicInteger changes = new AtomicInteger();
        DeviceListener listener = new DeviceListener() {
            @Override
            public void configChanged(BlkConfig config) {
                changes.incrementAndGet();
            }
        };
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).listener(listener).build()) {
            BlockDevice d = rig.device;
            d.close();
            for (org.junit.jupiter.api.function.Executable call : new org.junit.jupiter.api.function.Executable[] {
                () -> d.kick(0), () -> d.stopQueue(0), () -> d.startQueue(0), () -> d.reset(),
                () -> d.configureQueue(0, 256, 0, 4096, 8192), () -> d.resize(BYTES / 2), () -> d.negotiate(0),
                () -> d.setInterrupt(0, Interrupt.NONE), () -> d.setKick(0, null), () -> d.awaitDataPathPass(),
                () -> d.resizeDrivers(BYTES)}) {
                IllegalStateException e = assertThrows(IllegalStateException.class, call);
                assertEquals("device closed", e.getMessage());
            }
            assertEquals(0, changes.get(), "configChanged after close");
            for (int i = 0; i < 5000; i++) {
                assertThrows(IllegalStateException.class, () -> d.kick(0)); // never fills a dead inbox
            }
        }
    }

    @Test
    void theBuilderRefusesAConfigTheImageCannotServe() throws Exception {
        Path disk = DeviceRig.createImage(dir, BYTES);
        try (Image image = Image.open(disk, ImageOptions.defaults())) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BlockDevice
                    .builder(BlkConfig.builder(2 * BYTES).build(), BackendFactory.of(BackendKind.IO_URING, image)).build());
            assertTrue(e.getMessage().contains("beyond the disk"), e.getMessage());
        }
        try (Image image = Image.open(disk, ImageOptions.defaults().readOnly(true))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BlockDevice
                    .builder(BlkConfig.builder(BYTES).build(), BackendFactory.of(BackendKind.IO_URING, image)).build());
            assertTrue(e.getMessage().contains("read-only"), e.getMessage());
            try (BlockDevice ok = BlockDevice.builder(BlkConfig.builder(BYTES).readOnly(true).build(),
                    BackendFactory.of(BackendKind.IO_URING, image)).build()) {
                long f = ok.config().offeredFeatures();
                assertTrue(BlkFeatures.has(f, BlkFeatures.RO));
                assertFalse(BlkFeatures.has(f, BlkFeatures.DISCARD));
                assertFalse(BlkFeatures.has(f, BlkFeatures.WRITE_ZEROES));
            }
        }
    }
}
