package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.hostmem.GuestMemory;
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
    private static final long AREA = ShrinkableDeviceRig.AREA;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    /** Device A's file shrank; the error lands in device B (same shared I/O thread) at {@code point}. */
    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.POP, FaultPoints.SUBMIT_RETURNED})
    void aLateFaultLandingInAnotherDevicesQueueQuarantinesOnlyTheDeviceWhoseFileShrank(int point) throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("late", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            assertEquals(S_OK, a.roundTrip(T_IN));
            assertEquals(S_OK, b.roundTrip(T_IN));
            a.shrink();
            FaultPoints.arm(point);
            // B's request meets the error, and still completes: nothing of B was lost.
            assertEquals(S_OK, b.roundTrip(T_OUT));
            assertTrue(FaultPoints.fired(), "the error was thrown");
            assertTrue(a.device.isBroken(0), "A, whose file is shorter than its mapping, is quarantined");
            assertEquals(1, a.broken.size());
            assertTrue(a.broken.get(0).contains("a file now " + AREA + " bytes long"), a.broken.get(0));
            assertFalse(b.device.isBroken(0), "B is not quarantined: " + b.broken);
            assertEquals(List.of(), b.broken);
            assertEquals(1, b.reports.size(), "one report, by the device where it landed: " + b.reports);
            assertTrue(b.reports.get(0).contains("attributed by evidence"), b.reports.get(0));
            for (int i = 0; i < 8; i++) {
                assertEquals(S_OK, b.roundTrip(i % 2 == 0 ? T_OUT : T_IN));
            }
            // Both stop: A's drain and B's; B resumes afterwards.
            a.stop();
            b.stop();
            assertEquals(0, b.queue().inflight);
            b.device.startQueue(0);
            assertEquals(S_OK, b.roundTrip(T_IN));
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
             ShrinkableDeviceRig d = new ShrinkableDeviceRig("dev", image, null)) {
            assertEquals(S_OK, d.roundTrip(T_IN));
            d.shrink();
            d.device.stopQueue(0);
            int fd2 = Memfd.create("next", 2 * AREA);
            try (GuestMemory next = GuestMemory.builder().addRegion(0, 2 * AREA, fd2, 0, 0, false).build()) {
                d.device.setMemory(next);
                d.memory.close(); // the old frontend's table: gone, its evidence kept
                SplitQueueDriver q2 = ShrinkableDeviceRig.rings(next);
                d.device.configureQueue(0, ShrinkableDeviceRig.SIZE, q2.descGpa(), q2.availGpa(), q2.usedGpa());
                d.device.startQueue(0);
                assertEquals(S_OK, ShrinkableDeviceRig.roundTrip(q2, d.kick, d.irq, T_IN));
                FaultPoints.arm(FaultPoints.POP);
                assertEquals(S_OK, ShrinkableDeviceRig.roundTrip(q2, d.kick, d.irq, T_OUT));
                assertTrue(FaultPoints.fired());
                assertFalse(d.device.isBroken(0), "the next frontend's queue is not quarantined: " + d.broken);
                assertEquals(1, d.reports.size(), d.reports.toString());
                assertTrue(d.reports.get(0).contains("nothing quarantined"), d.reports.get(0));
                assertEquals(S_OK, ShrinkableDeviceRig.roundTrip(q2, d.kick, d.irq, T_IN));
                d.stop();
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
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
            assertEquals(S_OK, a.roundTrip(T_IN));
            a.shrink();
            a.close(); // detached: gone from the shared thread, its table unmapped
            FaultPoints.arm(FaultPoints.POP);
            assertEquals(S_OK, b.roundTrip(T_OUT));
            assertTrue(FaultPoints.fired());
            assertFalse(b.device.isBroken(0), b.broken.toString());
            assertEquals(1, b.reports.size(), b.reports.toString());
            assertTrue(b.reports.get(0).contains("nothing quarantined"), b.reports.get(0));
            assertEquals(S_OK, b.roundTrip(T_IN));
        }
    }

    /** No file shrank (hugetlbfs out of pages looks like this): quarantined where it landed, as before, and said so. */
    @Test
    void withoutEvidenceTheQueueWhereItLandedIsQuarantinedAndTheReportSaysSo() throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("none", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            assertEquals(S_OK, a.roundTrip(T_IN));
            FaultPoints.arm(FaultPoints.POP);
            b.add(T_IN);
            b.publishAndKick();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!b.device.isBroken(0)) {
                assertTrue(System.nanoTime() < deadline, "B never quarantined");
                Thread.sleep(1);
            }
            assertFalse(a.device.isBroken(0));
            assertTrue(b.reports.get(0).contains("no evidence"), b.reports.toString());
            b.stop();
            assertEquals(S_OK, a.roundTrip(T_IN));
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
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            assertEquals(S_OK, a.roundTrip(T_IN));
            assertEquals(S_OK, b.roundTrip(T_IN));
            a.shrink();
            FaultPoints.arm(FaultPoints.REAP_TAKEN);
            b.add(T_IN);
            b.publishAndKick();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (!FaultPoints.fired() || !a.device.isBroken(0)) {
                assertTrue(System.nanoTime() < deadline, "the reap never met the error, or A never quarantined");
                Thread.sleep(1);
            }
            assertFalse(b.device.isBroken(0), "B is not quarantined for A's fault: " + b.broken);
            b.stop();
            assertTrue(b.device.isBroken(0), "B lost a request: needs-reset after all");
            assertTrue(b.broken.get(0).contains("completion was lost"), b.broken.toString());
            assertEquals(1, b.device.counters(0).get(QueueCounters.LOST));
            assertEquals(0, b.queue().inflight);
            IoThread t = b.thread();
            assertEquals(t.backend().depth(), t.backend().freeSlots(), "the back end's slot of the lost completion came back");
            RequestPool pool = t.dispatcherPool();
            assertEquals(pool.size(), pool.available(), "every request slot back in the pool");
        }
    }
}
