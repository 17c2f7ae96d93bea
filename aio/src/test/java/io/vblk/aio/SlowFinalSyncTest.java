package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The final fdatasync of an image's close (the image's own close, or the last back end's release
 * of a deferred one) ran under the image's lock: a slow disk held every other caller of the
 * image (a back end opening on it, a resize, a holds count) for as long as the fdatasync took.
 * Now the close is decided under the lock and done outside it: while the sync is held (a test
 * seam, standing for a slow disk: no FUSE here), another thread's calls on the image complete,
 * and the descriptor stays open until the sync is done, then is closed once.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SlowFinalSyncTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"image close", "last back end release"})
    void aSlowFinalSyncBlocksNoOtherCallerOfTheImage(String closer) throws Exception {
        assumeTrue(Image.LINUX);
        Path path = dir.resolve("img");
        Files.write(path, new byte[64 << 10]);
        Image image = Image.open(path, ImageOptions.defaults());
        IoBackend io = closer.equals("image close") ? null : new NullBackend(image, BackendOptions.depth(4));
        CountDownLatch inSync = new CountDownLatch(1);
        CountDownLatch diskDone = new CountDownLatch(1);
        AtomicInteger syncs = new AtomicInteger();
        image.beforeFinalSync = () -> {
            syncs.incrementAndGet();
            inSync.countDown();
            try {
                diskDone.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        };
        if (io != null) {
            image.close(); // deferred: the back end holds the image
            assertEquals(0, syncs.get());
        }
        Thread closing = new Thread(() -> {
            if (io != null) {
                io.close(); // the last hold: the deferred close and its sync run here
            } else {
                image.close();
            }
        }, "closer");
        closing.start();
        try {
            assertTrue(inSync.await(60, TimeUnit.SECONDS), "the final sync started");
            // Another thread's calls while the sync is held. Before the change they waited for
            // the image's lock until the disk answered (here: never, until diskDone).
            CompletableFuture<Void> other = CompletableFuture.runAsync(() -> {
                assertThrows(IllegalArgumentException.class, () -> new NullBackend(image, BackendOptions.depth(4)),
                        "no back end on a closed image: refused, not kept waiting");
                assertFalse(image.hold());
                assertEquals(0, image.holds());
                assertThrows(IllegalStateException.class, () -> image.resize(128 << 10));
                assertFalse(image.flushFailed());
                image.close(); // a second close: nothing to do, and no waiting for the first
            });
            other.get(60, TimeUnit.SECONDS); // a TimeoutException here: blocked behind the sync
            assertTrue(ImageClosedUnderBackendTest.descriptorsOn(path) >= 1,
                    "the descriptor stays open while its fdatasync runs");
        } finally {
            diskDone.countDown();
            closing.join();
        }
        assertEquals(1, syncs.get(), "one final sync");
        assertEquals(0, ImageClosedUnderBackendTest.descriptorsOn(path), "closed after the sync, by the closer");
        image.close();
        assertEquals(1, syncs.get());
    }
}
