package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.FaultPoints;

/**
 * In-flight accounting under an exception the JVM throws at a point the code does not choose
 * (a guest-memory fault delivered late, at a safepoint poll: engine GuestFaults), on every back
 * end. The exception is thrown through {@link FaultPoints} at the two places where it hurt: right
 * after the submit system call returned (before its answer is used), and right after a
 * completion was taken from the kernel (before it is finished). Before the counts were derived
 * from the kernel's and the queues' own indices, the second left {@code inFlight()} at 1 for
 * ever: the engine's drain (stopQueue, close) then waited for ever, which is how FaultPointTest's
 * BOUNCE_COPY cases hung.
 */
class LateFaultAccountingTest {
    private static final int BLOCK = 4096;
    private static final int DEPTH = 8;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void anExceptionRightAfterTheSubmitCallSubmitsNothingTwiceAndLeavesTheCountExact(BackendKind kind) throws Exception {
        try (Image image = Image.open(newFile(), ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            IoBackend io = IoBackends.open(kind, image, DEPTH);
            try {
                prepareReads(io, guest, 4);
                FaultPoints.arm(FaultPoints.SUBMIT_RETURNED);
                assertThrows(InternalError.class, io::submit);
                assertTrue(FaultPoints.fired());
                Recorder rec = new Recorder(DEPTH);
                io.drain(rec); // the Recorder fails on a second completion of anything
                rec.assertAll(0, 4, BLOCK);
                assertEquals(0, io.inFlight());
                assertEquals(0, io.pendingSubmit());
                assertEquals(DEPTH, io.freeSlots());
            } finally {
                closeWithin(io);
            }
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void anExceptionRightAfterACompletionIsTakenLosesThatOneAndTheCountSaysNothingIsInFlight(BackendKind kind)
            throws Exception {
        try (Image image = Image.open(newFile(), ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            IoBackend io = IoBackends.open(kind, image, DEPTH);
            try {
                prepareReads(io, guest, 4);
                assertTrue(io.submit() > 0);
                FaultPoints.arm(FaultPoints.REAP_TAKEN);
                Recorder rec = new Recorder(DEPTH);
                boolean thrown = false;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60); // a hang guard
                while (io.inFlight() > 0 || io.pendingSubmit() > 0) {
                    assertTrue(System.nanoTime() < deadline, kind + ": in flight stays " + io.inFlight()
                            + " after " + rec.count() + " completions");
                    try {
                        if (io.poll(rec, DEPTH) == 0) {
                            io.awaitCompletions(10);
                        }
                    } catch (InternalError e) {
                        thrown = true;
                    }
                }
                assertTrue(thrown, "the exception was thrown inside the reap");
                assertEquals(3, rec.count(), "one completion lost, the others delivered once");
                assertEquals(0, io.inFlight());
                assertLostSlotComesBack(io, guest, kind);
            } finally {
                closeWithin(io);
            }
        }
    }

    /**
     * Linux AIO's one window (was documented as a possible drain hang): the kernel takes only
     * part of a batch, and the exception lands right after io_submit returned, so its answer is
     * lost. The answer is recovered from the iocbs (the kernel writes each taken one's key): the
     * untaken ones are pending again and complete, nothing twice, and the count reaches 0. Before,
     * the untaken ones stayed counted in flight for ever.
     */
    @org.junit.jupiter.api.Test
    void aLinuxAioBatchTakenPartlyWhenTheExceptionLandsIsRecoveredFromTheIocbs() throws Exception {
        int ops = 5;
        LinuxAioBackend.SubmitCall takesTwo = (context, count, iocbs) ->
                LinuxAioBackend.IO_SUBMIT.submit(context, Math.min(2, count), iocbs);
        try (Image image = Image.open(newFile(), ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(DEPTH), takesTwo, true);
            try {
                prepareReads(io, guest, ops);
                FaultPoints.arm(FaultPoints.SUBMIT_RETURNED);
                assertThrows(InternalError.class, io::submit);
                assertTrue(FaultPoints.fired());
                assertEquals(ops - 2, io.pendingSubmit(), "the three the kernel did not take are pending again");
                assertEquals(2, io.inFlight(), "only the two it took are in flight");
                Recorder rec = new Recorder(DEPTH);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60); // a hang guard
                while (io.inFlight() > 0 || io.pendingSubmit() > 0) {
                    assertTrue(System.nanoTime() < deadline, "in flight stays " + io.inFlight() + ", pending "
                            + io.pendingSubmit() + " after " + rec.count() + " completions");
                    io.submit();
                    if (io.poll(rec, DEPTH) == 0) {
                        io.awaitCompletions(10);
                    }
                }
                rec.assertAll(0, ops, BLOCK); // each once: the Recorder fails on a second
                assertEquals(DEPTH, io.freeSlots());
            } finally {
                closeWithin(io);
            }
        }
    }

    /**
     * The slot of a completion lost inside the helper thread's hand-back (Linux AIO has no
     * discard: the helper does it) comes back too.
     */
    @org.junit.jupiter.api.Test
    void aSlotLostWithTheHelperThreadsCompletionComesBack() throws Exception {
        try (Image image = Image.open(newFile(), ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            IoBackend io = IoBackends.open(BackendKind.LINUX_AIO, image, DEPTH);
            try {
                for (int i = 0; i < 2; i++) {
                    assertEquals(0, io.prepareDiscard((long) i * BLOCK, BLOCK, i));
                }
                assertTrue(io.submit() > 0);
                FaultPoints.arm(FaultPoints.REAP_TAKEN);
                Recorder rec = new Recorder(DEPTH);
                boolean thrown = false;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60); // a hang guard
                while (io.inFlight() > 0 || io.pendingSubmit() > 0) {
                    assertTrue(System.nanoTime() < deadline, "in flight stays " + io.inFlight());
                    try {
                        if (io.poll(rec, DEPTH) == 0) {
                            io.awaitCompletions(10);
                        }
                    } catch (InternalError e) {
                        thrown = true;
                    }
                }
                assertTrue(thrown, "thrown inside the helper's hand-back");
                assertEquals(1, rec.count());
                assertLostSlotComesBack(io, guest, BackendKind.LINUX_AIO);
            } finally {
                closeWithin(io);
            }
        }
    }

    /**
     * Before: the lost completion's slot stayed out of the pool until close. Now, with nothing
     * in flight or pending, it comes back (and nothing more), and the back end works at full
     * depth again.
     */
    private static void assertLostSlotComesBack(IoBackend io, GuestMemory guest, BackendKind kind) {
        assertEquals(DEPTH - 1, io.freeSlots(), kind + ": the lost completion's slot is out of the pool");
        assertEquals(1, io.reclaimLostSlots(), "one slot reclaimed");
        assertEquals(DEPTH, io.freeSlots());
        assertEquals(0, io.reclaimLostSlots(), "nothing more to reclaim");
        for (int i = 0; i < DEPTH; i++) {
            IoVector v = new IoVector(1);
            v.add(guest.address(i % 8 * BLOCK), BLOCK);
            assertEquals(0, io.prepareRead((long) i * BLOCK, v, i), "slot " + i);
        }
        Recorder again = new Recorder(DEPTH);
        io.drain(again);
        again.assertAll(0, DEPTH, BLOCK);
        assertEquals(DEPTH, io.freeSlots());
    }

    private static void prepareReads(IoBackend io, GuestMemory guest, int n) {
        for (int i = 0; i < n; i++) {
            IoVector v = new IoVector(1);
            v.add(guest.address(i * BLOCK), BLOCK);
            assertEquals(0, io.prepareRead((long) i * BLOCK, v, i));
        }
    }

    /** Close returns (it waits for nothing the kernel does not owe). */
    private static void closeWithin(IoBackend io) throws Exception {
        CompletableFuture<Void> close = CompletableFuture.runAsync(io::close, r -> {
            Thread t = new Thread(r);
            t.setDaemon(true); // if close hangs, the failure is reported, not the JVM kept
            t.start();
        });
        close.get(30, TimeUnit.SECONDS);
    }

    private Path newFile() throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(64L * BLOCK);
        }
        return path;
    }
}
