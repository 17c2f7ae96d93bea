package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Issue 10: bounce memory is bounded per device ({@link BounceBudget}). At the limit: every slot
 * of a back end in flight with a guest buffer that misses O_DIRECT's memory alignment and is as
 * large as may be bounced (4 MiB), under a budget of two such operations. Nothing fails for want
 * of memory, the borrowed memory never exceeds the budget, operations beyond it wait in order
 * and go once completions give memory back, the data is right, and an idle device holds no
 * borrowed memory.
 */
class BounceBudgetTest {
    static final int MAX = (int) BackendOptions.DEFAULT_MAX_BOUNCE_BYTES;
    static final long BUDGET = 2L * MAX;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void everySlotInFlightWithUnalignedMaxSizeBuffersStaysWithinTheBudget(BackendKind kind) throws IOException {
        int depth = 16;
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength((long) depth * MAX);
        }
        try (Image image = Image.open(path, ImageOptions.defaults().bounceBudgetBytes(BUDGET));
             SlottedBackend io = (SlottedBackend) IoBackends.open(kind, image, depth);
             GuestMemory out = new GuestMemory(depth * MAX + 4096);
             GuestMemory in = new GuestMemory(depth * MAX + 4096)) {
            assumeTrue(image.memoryAlignment() > 1, "this filesystem takes any buffer address: nothing to bounce");
            BounceBudget budget = image.bounceBudget();
            out.fillRandom(0, depth * MAX + 4096, 21);
            Recorder writes = new Recorder(depth);
            for (int i = 0; i < depth; i++) {
                // One byte past alignment: every transfer must be bounced.
                assertEquals(0, io.prepareWrite((long) i * MAX, IoBackendTest.one(out.address(i * MAX + 1), MAX), i));
            }
            assertEquals(depth, io.pendingSubmit());
            assertEquals(0, io.freeSlots(), "every slot in flight");
            assertTrue(io.waitingForBounce() >= depth - 2, "all but the first two wait for bounce memory, not "
                    + io.waitingForBounce());
            runToCompletion(io, writes, depth);
            writes.assertAll(0, depth, MAX);
            assertTrue(budget.peakBytes() <= BUDGET, budget.toString());
            assertEquals(BUDGET, budget.peakBytes(), "the budget was used to its limit");
            assertEquals(0, budget.inUseBytes(), "idle: no borrowed bounce memory held");

            Recorder reads = new Recorder(depth);
            for (int i = 0; i < depth; i++) {
                assertEquals(0, io.prepareRead((long) i * MAX, IoBackendTest.one(in.address(i * MAX + 3), MAX), i));
            }
            runToCompletion(io, reads, depth);
            reads.assertAll(0, depth, MAX);
            for (int i = 0; i < depth; i++) {
                assertArrayEquals(out.copy(i * MAX + 1, MAX), in.copy(i * MAX + 3, MAX), "block " + i);
            }
            assertTrue(budget.peakBytes() <= BUDGET, budget.toString());
            assertEquals(0, budget.inUseBytes());

            // Small unaligned transfers use the slots' retained buffers and borrow nothing.
            long peak = budget.peakBytes();
            Recorder small = new Recorder(depth);
            for (int i = 0; i < depth; i++) {
                assertEquals(0, io.prepareRead((long) i * MAX, IoBackendTest.one(in.address(i * 4096 + 5), 4096), i));
            }
            assertEquals(0, io.waitingForBounce());
            runToCompletion(io, small, depth);
            small.assertAll(0, depth, 4096);
            assertEquals(peak, budget.peakBytes());
        }
    }

    @Test
    void aBudgetBelowOneLargestOperationIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> ImageOptions.defaults().bounceBudgetBytes(MAX - 1));
        assertEquals(BounceBudget.DEFAULT_BYTES, ImageOptions.defaults().bounceBudgetBytes());
    }

    /** Submits and reaps until {@code count} completions arrived (waiters go as memory comes back). */
    static void runToCompletion(IoBackend io, Recorder rec, int count) {
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (rec.count() < count) {
            if (io.pendingSubmit() > 0) {
                assertTrue(io.submit() >= 0 || io.inFlight() > 0);
            }
            if (io.poll(rec, count) == 0) {
                io.awaitCompletions(10);
            }
            assertTrue(System.nanoTime() < deadline, "stuck: " + rec.count() + " of " + count + " done; " + io);
        }
        assertEquals(0, io.inFlight());
        assertEquals(0, io.pendingSubmit());
    }
}
