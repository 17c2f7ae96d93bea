package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A late guest-memory fault (engine GuestFaults) that lands inside the qcow2 driver's back end,
 * at each step of a request that fans out into several operations (a refcount block load and
 * write, its flush, a new L2 table, the L1 write, the data write; or an L2 load and the data
 * read): thrown through {@link FaultPoints#PREPARE_TAKEN} (the back end took a slot, the
 * operation is in no list) and {@link FaultPoints#REAP_TAKEN} (a completion taken from the
 * kernel and never finished). Before the fix the request waited for ever for the lost
 * operation, the driver counted it in flight for good (so the engine's drain, which gives lost
 * requests up only once the driver reports nothing in flight, never ended), and
 * {@code reclaimLostSlots} was not passed on, so the back end's slot stayed lost. Now the request
 * finishes with EIO once the back ends are idle, the lost slot comes back, the driver serves
 * the cluster correctly afterwards, and the image passes {@code qemu-img check} (leaks allowed).
 * The driver is driven as the engine's I/O thread drives it, catching the error the way the
 * engine does (real io_uring, real files).
 */
class Qcow2LostSlotAttackTest {
    private static final int DEPTH = 4;
    private static final int CLUSTER = 64 << 10;
    private static final int LEN = 8192;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.PREPARE_TAKEN, FaultPoints.REAP_TAKEN})
    void aLostOperationOfAnAllocatingWriteFailsItAndGivesItsSlotBack(int point) throws Exception {
        byte[] data = pattern(1);
        int faults = 0;
        for (int armAt = 0; armAt < 24; armAt++) {
            Path img = DriverRig.create(dir, "w" + point + "-" + armAt + ".qcow2", "16M");
            NativeBuffer buf = DriverRig.buffer(LEN);
            Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, DEPTH, Qcow2Options.defaults());
            try {
                DriverRig.fill(buf, data, 0, LEN);
                Step step = new Step(d, point, armAt);
                step.run(() -> d.write(3L * CLUSTER, vec(buf), 7));
                long result = step.awaitCompletion(7);
                faults += step.faults;
                assertTrue(result == LEN || result == -5, "armed at " + armAt + ": " + result);
                settle(d, "armed at " + armAt);
                assertServes(d, 3L * CLUSTER, data, "armed at " + armAt);
                assertServes(d, 9L * CLUSTER, pattern(2), "armed at " + armAt);
            } finally {
                closeWithin(d);
            }
            assertCheckPasses(img);
        }
        assertTrue(faults >= 5, "the fault landed in only " + faults + " steps");
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.PREPARE_TAKEN, FaultPoints.REAP_TAKEN})
    void aLostOperationOfAColdReadFailsItAndGivesItsSlotBack(int point) throws Exception {
        byte[] raw = new byte[4 << 20];
        new Random(3).nextBytes(raw);
        Path rawFile = dir.resolve("r" + point + ".raw");
        Files.write(rawFile, raw);
        int faults = 0;
        for (int armAt = 0; armAt < 12; armAt++) {
            Path img = dir.resolve("r" + point + "-" + armAt + ".qcow2");
            DriverRig.qemuImg("convert", "-q", "-f", "raw", "-O", "qcow2", rawFile.toString(), img.toString());
            NativeBuffer buf = DriverRig.buffer(LEN);
            Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, DEPTH, Qcow2Options.defaults());
            try {
                Step step = new Step(d, point, armAt);
                step.run(() -> d.read(5L * CLUSTER, vec(buf), 9));
                long result = step.awaitCompletion(9);
                faults += step.faults;
                assertTrue(result == LEN || result == -5, "armed at " + armAt + ": " + result);
                settle(d, "armed at " + armAt);
                DriverRig rig = new DriverRig(d);
                DriverRig.poison(buf);
                assertEquals(LEN, rig.one(rig.read(5L * CLUSTER, buf, LEN)));
                assertArrayEquals(java.util.Arrays.copyOfRange(raw, 5 * CLUSTER, 5 * CLUSTER + LEN),
                        DriverRig.bytes(buf, LEN), "armed at " + armAt);
            } finally {
                closeWithin(d);
            }
        }
        assertTrue(faults >= 2, "the fault landed in only " + faults + " steps");
    }

    /** Closes on another thread: a close that waits for ever for a lost request fails the test. */
    private static void closeWithin(Qcow2Driver d) throws InterruptedException {
        Thread closer = new Thread(d::close, "qcow2-close");
        closer.setDaemon(true);
        closer.start();
        closer.join(10_000);
        assertTrue(!closer.isAlive(), "close waited for a request nothing can complete");
    }

    /** Lets metadata retries finish, then checks every slot (driver and back end) came back. */
    private static void settle(Qcow2Driver d, String where) {
        IoBackend io = d.imageBackend();
        long deadline = System.nanoTime() + 60_000_000_000L; // a hang guard (real I/O on a loaded machine)
        while (d.pendingSubmit() > 0 || io.inFlight() > 0) {
            d.submit();
            d.poll((tag, result) -> { throw new AssertionError(where + ": completion after the end " + tag); }, 16);
            assertTrue(System.nanoTime() < deadline, where + ": the driver never went idle");
        }
        assertEquals(0, d.inFlight(), where);
        assertEquals(DEPTH, d.freeSlots(), where + ": the driver's request slots");
        // The driver saw the fault go through it: it took the lost slots back itself, once idle.
        assertEquals(io.depth(), io.freeSlots(), where + ": the back end's slots (a lost one never came back)");
        assertEquals(0, d.reclaimLostSlots(), where + ": the engine's reclaim finds nothing left");
    }

    private static void assertServes(Qcow2Driver d, long offset, byte[] data, String where) {
        DriverRig rig = new DriverRig(d);
        NativeBuffer buf = DriverRig.buffer(LEN);
        DriverRig.fill(buf, data, 0, LEN);
        assertEquals(LEN, rig.one(rig.write(offset, buf, LEN)), where);
        DriverRig.poison(buf);
        assertEquals(LEN, rig.one(rig.read(offset, buf, LEN)), where);
        assertArrayEquals(data, DriverRig.bytes(buf, LEN), where);
    }

    private static void assertCheckPasses(Path img) throws Exception {
        QemuTools.Run r = DriverRig.run("qemu-img", "check", img.toString());
        // 0: clean; 3: leaked clusters only (a reservation a lost step abandoned), never errors.
        assertTrue(r.code() == 0 || r.code() == 3, r.output());
    }

    private static IoVector vec(NativeBuffer buf) {
        IoVector v = new IoVector(1);
        v.add(buf.address(), LEN);
        return v;
    }

    private static byte[] pattern(int seed) {
        byte[] b = new byte[LEN];
        new Random(seed).nextBytes(b);
        return b;
    }

    /**
     * Drives the driver like the I/O thread (accept, submit, poll), arming the fault point before
     * the {@code armAt}-th call, and catching the error as the engine does.
     */
    private static final class Step {
        private final Qcow2Driver d;
        private final int point;
        private final int armAt;
        private int calls;
        /** How many faults this request's life met (so the test cannot pass vacuously). */
        int faults;
        private final List<long[]> completions = new ArrayList<>();

        Step(Qcow2Driver d, int point, int armAt) {
            this.d = d;
            this.point = point;
            this.armAt = armAt;
        }

        /** Accepts the request (or throws the fault from inside its first steps). */
        void run(java.util.function.IntSupplier request) {
            call(() -> assertEquals(0, request.getAsInt()));
        }

        private void call(Runnable r) {
            if (calls++ == armAt) {
                FaultPoints.arm(point);
            }
            try {
                r.run();
            } catch (InternalError e) {
                assertEquals(FaultPoints.MESSAGE, e.getMessage());
                faults++;
            }
        }

        long awaitCompletion(long tag) {
            long deadline = System.nanoTime() + 60_000_000_000L; // a hang guard (real I/O on a loaded machine)
            while (completions.isEmpty()) {
                call(d::submit);
                d.acknowledgeCompletions();
                call(() -> d.poll((t, r) -> completions.add(new long[] {t, r}), 16));
                if (completions.isEmpty() && d.pendingSubmit() == 0) {
                    d.awaitCompletions(100); // one step per round: each armAt lands in another step
                }
                assertTrue(System.nanoTime() < deadline, "armed at " + armAt + ": the request never completed"
                        + " (in flight " + d.inFlight() + ")");
            }
            FaultPoints.disarm();
            assertEquals(1, completions.size());
            assertEquals(tag, completions.get(0)[0]);
            return completions.get(0)[1];
        }
    }
}
