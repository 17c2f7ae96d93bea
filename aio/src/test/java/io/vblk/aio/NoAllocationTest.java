package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Steady state allocates nothing on the submitting and reaping thread: prepare, submit, poll. */
class NoAllocationTest {
    static final int BLOCK = 4096;
    static final int DEPTH = 32;
    static final int OPERATIONS = 20_000;

    @TempDir
    Path dir;

    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }

    /** Re-issues every completion into its own slot: the engine's steady state. */
    private static final class Reissue implements CompletionSink {
        final IoBackend io;
        final IoVector[] vectors;
        long completed;

        Reissue(IoBackend io, GuestMemory guest) {
            this.io = io;
            this.vectors = new IoVector[DEPTH];
            for (int i = 0; i < DEPTH; i++) {
                vectors[i] = new IoVector(2);
                // Two segments, the second unaligned: the bounce path is part of the steady state.
                vectors[i].add(guest.address(i * 2 * BLOCK), BLOCK / 2);
                vectors[i].add(guest.address(i * 2 * BLOCK + BLOCK + 1), BLOCK / 2);
            }
        }

        @Override
        public void complete(long userData, long result) {
            completed++;
            int slot = (int) userData;
            int rc = (completed & 1) == 0 ? io.prepareRead((long) slot * BLOCK, vectors[slot], slot)
                    : io.prepareWrite((long) slot * BLOCK, vectors[slot], slot);
            if (rc != 0) {
                throw new AssertionError("prepare failed: " + rc);
            }
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void theSteadyStateAllocatesNothing(BackendKind kind) throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength((long) DEPTH * BLOCK);
        }
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = IoBackends.open(kind, image, DEPTH);
             GuestMemory guest = new GuestMemory(DEPTH * 2 * BLOCK)) {
            Reissue loop = new Reissue(io, guest);
            for (int i = 0; i < DEPTH; i++) {
                assertEquals(0, io.prepareRead((long) i * BLOCK, loop.vectors[i], i));
            }
            io.submit();
            run(io, loop, 3000);
            long before = allocatedBytes();
            run(io, loop, OPERATIONS);
            long allocated = allocatedBytes() - before;
            // The measurement itself costs about a kilobyte; one object per operation would be
            // at least 16 bytes x 20000.
            assertTrue(allocated < 4096, kind + " allocated " + allocated + " bytes over " + OPERATIONS + " operations");
        }
    }

    private static void run(IoBackend io, Reissue loop, int operations) {
        long until = loop.completed + operations;
        while (loop.completed < until) {
            if (io.poll(loop, DEPTH) > 0) {
                io.submit();
            } else {
                io.awaitCompletions(100);
            }
        }
    }
}
