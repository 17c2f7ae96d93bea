package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.EventFd;

/**
 * An I/O thread that sleeps in its back end's io_uring ({@link RingWait}) on a real ring, real
 * eventfds and a real file: it wakes for a kick (also one that lands between the re-check and
 * the sleep), for an inbox command, for a completion and for a deadline; a stop drains requests
 * in flight; and where the ring cannot serve (another back end, epoll forced, a dedicated
 * completion thread, a shared thread) it keeps epoll and still works. Round-level tests drive an
 * {@link IoThread} that is never started; a sleep that never ends fails at the class's timeout
 * instead of hanging the build (it times nothing).
 */
// One thread runs each whole test: polls belong to the thread that armed them (the kernel cancels
// them when it exits), as on an I/O thread; the timeout fails a hang instead of blocking the build.
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class RingWaitTest {

    @TempDir
    Path dir;

    private static Tuning inline() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).waitStrategy(WaitStrategy.BLOCKING).ringSleep(true).build();
    }

    private Image filledImage() throws IOException {
        Path p = dir.resolve("img");
        byte[] content = new byte[1 << 20];
        new Random(3).nextBytes(content);
        Files.write(p, content);
        return Image.open(p, ImageOptions.defaults().direct(true));
    }

    /** A rig whose thread sleeps in its io_uring, with queue 0 watched through {@code kick}. */
    private static RoundRig ringRig(Image image, EventFd kick) {
        IoBackend io = IoBackends.open(BackendKind.IO_URING, image, 64);
        RoundRig rig = new RoundRig(inline(), null, io);
        rig.thread.chooseSleep();
        assertTrue(rig.thread.sleepsInRing(), "one io_uring ring on Linux 6.x: the thread sleeps in it");
        if (kick != null) {
            rig.queue.kick = kick;
            rig.thread.watchKick(rig.queue);
        }
        return rig;
    }

    @Test
    @DisplayName("a kick that lands between the re-check and the sleep ends the sleep; the read then completes and its completion wakes the sleep")
    void aKickBetweenTheRecheckAndTheSleepIsNotLost() throws IOException {
        try (Image image = filledImage(); EventFd kick = EventFd.create(true)) {
            try (RoundRig rig = ringRig(image, kick)) {
                assertEquals(0, rig.thread.doWork());
                assertEquals(-1, rig.thread.prepareSleep(), "nothing to do: it sleeps, notifications on");
                rig.addRead(0);
                assertTrue(rig.driver.publishAvail(), "asleep: the guest must kick");
                kick.signal(); // after the re-check, before the enter that arms the kick's poll
                rig.thread.awaitEvents(-1);
                rig.thread.finishSleep();
                int used = 0;
                while (used == 0) {
                    rig.thread.doWork();
                    used = rig.reapAll();
                    if (used == 0) {
                        rig.thread.sleep(); // the completion ends it
                    }
                }
                assertEquals(1, used);
                assertEquals(0, rig.status(0), "VIRTIO_BLK_S_OK");
                assertTrue(rig.queue.counters.get(QueueCounters.KICKS) >= 1, "the kick's poll CQE was counted as a kick");
            }
        }
    }

    @Test
    @DisplayName("an inbox command from another thread ends the sleep")
    void anInboxCommandEndsTheSleep() throws IOException {
        try (Image image = filledImage(); RoundRig rig = ringRig(image, null)) {
            for (int round = 0; round < 5; round++) {
                assertEquals(-1, rig.thread.prepareSleep());
                boolean[] ran = new boolean[1];
                Thread other = new Thread(() -> {
                    try {
                        Thread.sleep(10);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    rig.thread.submitCommand(t -> ran[0] = true);
                });
                other.start();
                rig.thread.awaitEvents(-1);
                rig.thread.finishSleep();
                ThreadEnd.joinQuietly(other);
                rig.thread.doWork();
                assertTrue(ran[0], "the round ran the command");
            }
        }
    }

    @Test
    @DisplayName("a sleep with a deadline (a throttled queue's) ends at the deadline with nothing else to wake it")
    void aDeadlineEndsTheSleep() throws IOException {
        try (Image image = filledImage(); RoundRig rig = ringRig(image, null)) {
            assertEquals(-1, rig.thread.prepareSleep());
            long start = System.nanoTime();
            rig.thread.awaitEvents(40);
            rig.thread.finishSleep();
            assertTrue(System.nanoTime() - start >= 35_000_000L, "it slept until the deadline, not less");
        }
    }

    @Test
    @DisplayName("a device whose thread sleeps in its ring serves round trips and a stop drains requests in flight")
    void stopDrainsRequestsInFlightWhileTheThreadSleepsInTheRing() throws IOException {
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(4 << 20)
                .tuning(Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).ringSleep(true).build()).build()) {
            assertTrue(rig.device.ioThread(0).sleepsInRing());
            long buf = rig.buffer(0, 4096L * 32);
            assertEquals(0, rig.roundTrip(0, BlkRequestDescriptor.T_OUT, 0, buf, 4096, false));
            for (int round = 0; round < 5; round++) {
                int[] heads = new int[32];
                for (int i = 0; i < heads.length; i++) {
                    heads[i] = rig.add(0, BlkRequestDescriptor.T_IN, i * 8L, buf + 4096L * i, 4096, true);
                }
                rig.kick(0);
                // A stop drains what the thread popped (requests still in the avail ring wait for
                // the restart): each used element published by then carries a finished status.
                rig.device.stopQueue(0);
                java.util.Set<Integer> done = new java.util.HashSet<>();
                int head;
                while ((head = rig.driver(0).reap()) >= 0) {
                    assertEquals(0, rig.status(0, head), "a request the stop drained had finished");
                    done.add(head);
                }
                rig.device.startQueue(0);
                rig.kick(0);
                while (done.size() < heads.length) {
                    head = rig.awaitUsed(0, 10_000);
                    assertEquals(0, rig.status(0, head));
                    assertTrue(done.add(head), "each request used once");
                }
            }
        }
    }

    @Test
    @DisplayName("closing a device whose thread sleeps in its ring wakes the thread and it ends (every wait strategy that sleeps)")
    void closeEndsAThreadSleepingInTheRing() throws IOException {
        for (WaitStrategy wait : new WaitStrategy[] {WaitStrategy.BLOCKING, WaitStrategy.ADAPTIVE}) {
            for (int round = 0; round < 3; round++) {
                Thread io;
                try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(1 << 20)
                        .tuning(Tuning.builder().waitStrategy(wait).ringSleep(true).build()).build()) {
                    assertTrue(rig.device.ioThread(0).sleepsInRing());
                    long buf = rig.buffer(0, 4096);
                    assertEquals(0, rig.roundTrip(0, BlkRequestDescriptor.T_IN, 0, buf, 4096, true));
                    if (round > 0) {
                        rig.device.stopQueue(0);
                    }
                    if (round > 1) {
                        rig.device.startQueue(0);
                        assertEquals(0, rig.roundTrip(0, BlkRequestDescriptor.T_IN, 0, buf, 4096, true));
                    }
                    io = rig.device.ioThread(0).thread();
                }
                assertFalse(io.isAlive(), wait + " round " + round + ": the I/O thread ended when the device closed");
            }
        }
    }

    @Test
    @DisplayName("linux-aio, epoll forced, a dedicated completion thread: the thread keeps epoll and still serves")
    void fallsBackToEpollWhereTheRingCannotServe() throws IOException {
        Tuning blocking = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).ringSleep(true).build();
        Tuning forced = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).ringSleep(false).build();
        Tuning dedicated = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).ringSleep(true)
                .threadingMode(ThreadingMode.DEDICATED).build();
        Object[][] cases = {
            {BackendKind.LINUX_AIO, blocking}, {BackendKind.THREADS, blocking}, {BackendKind.IO_URING, forced},
            {BackendKind.IO_URING, dedicated},
        };
        for (Object[] c : cases) {
            try (DeviceRig rig = DeviceRig.builder(dir, (BackendKind) c[0]).imageBytes(1 << 20).tuning((Tuning) c[1]).build()) {
                assertFalse(rig.device.ioThread(0).sleepsInRing(), c[0] + " " + c[1]);
                long buf = rig.buffer(0, 4096);
                assertEquals(0, rig.roundTrip(0, BlkRequestDescriptor.T_IN, 0, buf, 4096, true));
            }
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    @DisplayName("with ring sleep asked for, every back end serves writes and reads (io_uring in its ring, the rest in epoll)")
    void everyBackEndServesWithRingSleepAskedFor(BackendKind kind) throws IOException {
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).ringSleep(true).build();
        try (DeviceRig rig = DeviceRig.builder(dir, kind).imageBytes(1 << 20).tuning(tuning).build()) {
            assertEquals(kind == BackendKind.IO_URING, rig.device.ioThread(0).sleepsInRing(), kind.cliName());
            long out = rig.buffer(0, 4096);
            long in = rig.buffer(0, 4096);
            for (int i = 0; i < 4096; i++) {
                org.agrona.UnsafeApi.putByte(rig.host(out, 4096) + i, (byte) (i * 7 + 1));
            }
            for (int sector = 0; sector < 64; sector += 8) {
                assertEquals(0, rig.roundTrip(0, BlkRequestDescriptor.T_OUT, sector, out, 4096, false));
                assertEquals(0, rig.roundTrip(0, BlkRequestDescriptor.T_IN, sector, in, 4096, true));
                if (kind != BackendKind.NULL) {
                    for (int i = 0; i < 4096; i++) {
                        assertEquals(org.agrona.UnsafeApi.getByte(rig.host(out, 4096) + i),
                                org.agrona.UnsafeApi.getByte(rig.host(in, 4096) + i), "byte " + i);
                    }
                }
            }
        }
    }

    @Test
    @DisplayName("a shared I/O thread (several devices' back ends) keeps epoll")
    void aSharedThreadKeepsEpoll() throws IOException {
        SharedIoThread shared = new SharedIoThread("ring-wait-shared", WaitStrategy.BLOCKING, 0);
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(1 << 20).ioThreads(shared)
                .tuning(Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).ringSleep(true).build()).build()) {
            assertFalse(rig.device.ioThread(0).sleepsInRing());
            long buf = rig.buffer(0, 4096);
            assertEquals(0, rig.roundTrip(0, BlkRequestDescriptor.T_IN, 0, buf, 4096, true));
        } finally {
            shared.close();
        }
    }
}
