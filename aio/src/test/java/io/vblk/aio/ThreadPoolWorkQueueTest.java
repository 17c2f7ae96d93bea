package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The thread back end's hand-over to its workers under preemption. NoAllocationTest[THREADS]
 * hung once in CI: close() waited for an operation while every worker was parked and nothing
 * was queued or done. Two windows could lose an operation: Agrona's many-to-many queue refuses
 * an offer onto the entry a worker has claimed in poll() but not yet released (the offer's
 * result was ignored), and the queue's release-store publish could pass the submitter's read
 * of the idle mask (a lost wake-up). Both windows are nanoseconds wide, so this test does not
 * catch them reliably; it drives the hand-over hard (a ring of two, four workers, busy threads
 * competing for the cores) and asserts the contract: every operation completes, close returns.
 */
class ThreadPoolWorkQueueTest {
    private static final int BLOCK = 512;
    private static final int DEPTH = 2;
    private static final int OPERATIONS = 100_000;

    @TempDir
    Path dir;

    @Test
    void aWorkerPreemptedInsidePollLosesNoOperation() throws Exception {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(DEPTH * BLOCK);
        }
        AtomicBoolean stop = new AtomicBoolean();
        Thread[] busy = new Thread[3];
        for (int i = 0; i < busy.length; i++) {
            busy[i] = new Thread(() -> {
                while (!stop.get()) {
                    Thread.onSpinWait();
                }
            }, "busy-" + i);
            busy[i].setDaemon(true);
            busy[i].start();
        }
        try (Image image = Image.open(path, ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(DEPTH * BLOCK)) {
            // A hang is the failure; the bound only turns it into a failed test.
            assertTimeoutPreemptively(Duration.ofSeconds(120), () -> {
                IoBackend io = IoBackends.open(BackendKind.THREADS, image, BackendOptions.depth(DEPTH).workerThreads(4));
                long[] completed = new long[1];
                IoVector[] vectors = new IoVector[DEPTH];
                for (int i = 0; i < DEPTH; i++) {
                    vectors[i] = new IoVector(1);
                    vectors[i].add(guest.address(i * BLOCK), BLOCK);
                }
                CompletionSink reissue = (userData, result) -> {
                    completed[0]++;
                    int slot = (int) userData;
                    if (result != BLOCK) {
                        throw new AssertionError("read gave " + result);
                    }
                    assertEquals(0, io.prepareRead((long) slot * BLOCK, vectors[slot], slot));
                };
                for (int i = 0; i < DEPTH; i++) {
                    assertEquals(0, io.prepareRead((long) i * BLOCK, vectors[i], i));
                }
                io.submit();
                while (completed[0] < OPERATIONS) {
                    if (io.poll(reissue, DEPTH) > 0) {
                        io.submit();
                    } else {
                        io.awaitCompletions(100);
                    }
                }
                io.close();
            });
        } finally {
            stop.set(true);
        }
    }
}
