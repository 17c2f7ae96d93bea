package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.Mapping;
import io.vblk.testkit.TestFuse;

/**
 * An undrained close of the thread back end drops what is still queued for its workers: with
 * one worker stuck in a read on a hung FUSE file, a second operation waits in the queue. Before,
 * it stayed there and the worker performed it once the server answered, after close had
 * returned (a queued write would reach a file whose locks another writer may hold by then; here
 * a read writes into the caller's memory after close). It must never start: once the reaper
 * has released the back end, its buffer is untouched.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ThreadBackendUndrainedQueuedDroppedTest {
    private static final int BLOCK = StuckReads.BLOCK;
    private static final byte FILL = StuckReads.FILL;

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(StuckReads.CLOSE_DRAIN_PROPERTY);
    }

    @Test
    void anOperationQueuedBehindAStuckWorkerNeverRunsAfterAnUndrainedClose() throws Exception {
        try (TestFuse fs = StuckReads.mount(dir, 500)) {
            Image image = Image.open(fs.file(), ImageOptions.defaults().readOnly(true));
            IoBackend io = IoBackends.open(BackendKind.THREADS, image, BackendOptions.depth(8).workerThreads(1));
            Mapping stuck = Mapping.anonymous(BLOCK, false);
            Mapping queued = Mapping.anonymous(BLOCK, false);
            StuckReads.stuckRead(io, fs, stuck); // the one worker is in the read
            StuckReads.read(io, queued, 8 * BLOCK, 2);

            io.close(); // returns undrained after 0.5 s: the worker is still in the first read
            assertFalse(io.closedDrained());
            fs.answerHeld();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!io.closedDrained()) {
                assertTrue(System.nanoTime() < deadline, "the reaper never released the back end");
                Thread.sleep(5);
            }
            assertEquals(FILL, UnsafeApi.getByte(stuck.address()), "the read in progress finished into its buffer");
            assertEquals(0, UnsafeApi.getByte(queued.address()), "the queued read ran after close");
            assertEquals(0, UnsafeApi.getByte(queued.address() + BLOCK - 1), "the queued read ran after close");
            image.close();
            stuck.close();
            queued.close();
        }
    }
}
