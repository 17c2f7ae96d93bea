package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.TreeSet;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.sys.EventFd;
import io.vblk.sys.FaultPoints;

/**
 * A late guest-memory fault (another device's: its file shrank) delivered inside {@link
 * BlockDevice#setKick} or {@link BlockDevice#setInterrupt} on a running queue, at each step of
 * the change: before the swap, just after it (before the new kick is watched, before the
 * completion fence is taken), and after that. The fault is attributed to the device whose file
 * shrank, and the change runs again from the top; it must then swap exactly once: the new kick is
 * watched (a kick on it is served), the new interrupt fires, the replaced copy is closed, and no
 * descriptor is leaked or closed twice (/proc/self/fd gained the installed copy only, which stays
 * open, and lost the replaced one). Before commit 5018ea5 a fault just after the swap ({@link FaultPoints#SWAPPED})
 * left the new kick unwatched (the request was never served), and re-ran the interrupt's swap,
 * so the installed copy became "previous" and was closed (no interrupt) and the old one leaked.
 */
class SwapLateFaultTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.COMMAND, FaultPoints.SWAPPING, FaultPoints.SWAPPED, FaultPoints.SWAP_ENDING})
    void aLateFaultAtEachStepOfAKickChangeSwapsOnce(int point) throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("swap", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared);
             EventFd kick = EventFd.create(true)) {
            assertEquals(S_OK, b.roundTrip(T_IN));
            EventFd replaced = b.queue().kick;
            int replacedFd = replaced.fd();
            a.shrink();
            Set<Integer> fds = openDescriptors();
            FaultPoints.arm(point);
            b.device.setKick(0, kick);
            assertTrue(FaultPoints.fired(), "the error was thrown in the kick change");
            assertFalse(b.device.isBroken(0), "attributed to A, whose file shrank: " + b.broken);
            assertTrue(replaced.isClosed(), "the replaced copy is closed");
            assertNotSame(replaced, b.queue().kick);
            assertFalse(b.queue().kick.isClosed(), "the installed copy is open");
            madeOneClosedOne(fds, b.queue().kick.fd(), replacedFd);
            for (int i = 0; i < 4; i++) {
                awaitAsleep(shared); // woken by nothing but the kick
                assertEquals(S_OK, ShrinkableDeviceRig.roundTrip(b.q, kick, b.irq, T_IN), "served on the new kick");
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.SWAPPING, FaultPoints.SWAPPED, FaultPoints.SWAP_ENDING})
    void aLateFaultAtEachStepOfAnInterruptChangeSwapsOnce(int point) throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("swap", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared);
             EventFd irq = EventFd.create(true)) {
            assertEquals(S_OK, b.roundTrip(T_IN));
            EventFd replaced = copyOf(b.queue().interrupt);
            int replacedFd = replaced.fd();
            a.shrink();
            Set<Integer> fds = openDescriptors();
            FaultPoints.arm(point);
            b.device.setInterrupt(0, Interrupt.of(irq));
            assertTrue(FaultPoints.fired(), "the error was thrown in the interrupt change");
            assertFalse(b.device.isBroken(0), "attributed to A, whose file shrank: " + b.broken);
            assertTrue(replaced.isClosed(), "the replaced copy is closed");
            assertFalse(copyOf(b.queue().interrupt).isClosed(), "the installed copy is open");
            madeOneClosedOne(fds, copyOf(b.queue().interrupt).fd(), replacedFd);
            for (int i = 0; i < 4; i++) {
                awaitAsleep(shared);
                assertEquals(S_OK, ShrinkableDeviceRig.roundTrip(b.q, b.kick, irq, T_IN), "the new interrupt fires");
            }
        }
    }

    /**
     * Waits until the shared thread sleeps in epoll (and a little longer, past its sleep's
     * re-checks), so that only a watched kick can wake it: a thread still awake from the change
     * would pop the next request without any kick.
     */
    private static void awaitAsleep(SharedIoThread shared) throws InterruptedException {
        while (!shared.isSleeping()) {
            Thread.sleep(1);
        }
        Thread.sleep(20);
    }

    /** The device's own eventfd behind an {@link EventFdInterrupt.Owned}. */
    private static EventFd copyOf(Interrupt interrupt) throws ReflectiveOperationException {
        java.lang.reflect.Field f = EventFdInterrupt.Owned.class.getDeclaredField("copy");
        f.setAccessible(true);
        return (EventFd) f.get(interrupt);
    }

    /**
     * The change made one descriptor, the installed copy, which is open, and closed the replaced
     * copy's. A set, not a count: a descriptor an earlier test's threads close meanwhile is not
     * this change's.
     */
    private static void madeOneClosedOne(Set<Integer> before, int installed, int replaced) throws IOException {
        Set<Integer> after = openDescriptors();
        Set<Integer> made = new TreeSet<>(after);
        made.removeAll(before);
        assertEquals(Set.of(installed), made, "one descriptor made, the installed copy; open before: " + before);
        assertFalse(after.contains(replaced), "the replaced copy's descriptor " + replaced + " is closed");
    }

    /** The descriptors open in this process, but the one listing them. */
    private static Set<Integer> openDescriptors() throws IOException {
        Set<Integer> fds = new TreeSet<>();
        try (DirectoryStream<Path> list = Files.newDirectoryStream(Path.of("/proc/self/fd"))) {
            for (Path p : list) {
                try {
                    if (!Files.readSymbolicLink(p).toString().endsWith("/fd")) {
                        fds.add(Integer.parseInt(p.getFileName().toString()));
                    }
                } catch (IOException gone) {
                    // closed while listed (another thread's): not open after all
                }
            }
        }
        return fds;
    }
}
