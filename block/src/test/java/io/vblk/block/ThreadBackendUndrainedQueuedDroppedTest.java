package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
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
import io.vblk.aio.IoVector;
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
    private static final int BLOCK = 4096;
    private static final byte FILL = 0x5a;

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty("vblk.aio.closeDrainMs");
    }

    @Test
    void anOperationQueuedBehindAStuckWorkerNeverRunsAfterAnUndrainedClose() throws Exception {
        Path at = Files.createDirectory(dir.resolve("mnt"));
        try (TestFuse fs = TestFuse.stalling(at, 1 << 20)) {
            assumeTrue(fs != null, "FUSE cannot be mounted here");
            fs.fill(FILL);
            fs.holdReads(true);
            System.setProperty("vblk.aio.closeDrainMs", "500");
            Image image = Image.open(fs.file(), ImageOptions.defaults().readOnly(true));
            IoBackend io = IoBackends.open(BackendKind.THREADS, image, BackendOptions.depth(8).workerThreads(1));
            Mapping stuck = Mapping.anonymous(BLOCK, false);
            Mapping queued = Mapping.anonymous(BLOCK, false);
            IoVector v = new IoVector(1);
            v.add(stuck.address(), BLOCK);
            assertEquals(0, io.prepareRead(0, v, 1));
            assertEquals(1, io.submit());
            assertEquals(1, fs.awaitHeld(1, 30_000), "the one worker is in the read");
            v.clear();
            v.add(queued.address(), BLOCK);
            assertEquals(0, io.prepareRead(8 * BLOCK, v, 2));
            assertEquals(1, io.submit());

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
