package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.ImageLock;
import io.vblk.sys.Mapping;
import io.vblk.testkit.TestFuse;

/**
 * (Review rev12a.) an undrained close must keep the image's locks until the kernel is done (the
 * contract of IoBackend.closedDrained, RawDriver.close, Export.close). The thread back end's
 * workers go through FileChannels opened on /proc/self/fd/N, which are other open file
 * descriptions: nothing holds the locked description once Image.close closes the descriptor,
 * so the locks go at once while a worker (and every write still queued for the workers) can
 * still reach the file. Here another writer takes the image's locks while the read is stuck.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ThreadBackendUndrainedLocksKeptTest {
    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(StuckReads.CLOSE_DRAIN_PROPERTY);
    }

    @Test
    void locksStayWhileAWorkerIsStuckAfterAnUndrainedClose() throws Exception {
        try (TestFuse fs = StuckReads.mount(dir, 500)) {
            Image image = Image.open(fs.file(), ImageOptions.defaults());
            assertTrue(ImageLocks.lock(image, ImageLock.Locking.ON));
            // Control: the locks do conflict on this mount while the image is open.
            Image probe = Image.open(fs.file(), ImageOptions.defaults());
            try {
                assertThrows(ImageLock.LockedException.class, () -> ImageLocks.lock(probe, ImageLock.Locking.ON));
            } finally {
                probe.close();
            }
            IoBackend io = IoBackends.open(BackendKind.THREADS, image, 8);
            Mapping buffer = Mapping.anonymous(StuckReads.BLOCK, false);
            StuckReads.stuckRead(io, fs, buffer);
            Thread closer = StuckReads.startCloser(() -> {
                io.close();
                // RawDriver.close / Export.close: no ImageLocks.release (undrained), then this.
                image.close();
            });
            try {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (!image.isClosed()) {
                    assertTrue(System.nanoTime() < deadline);
                    Thread.sleep(5);
                }
                Thread.sleep(500); // past file.close() in Image.close
                assertFalse(io.closedDrained(), "the read is still with the worker");
                Image other = Image.open(fs.file(), ImageOptions.defaults());
                try {
                    assertThrows(ImageLock.LockedException.class, () -> ImageLocks.lock(other, ImageLock.Locking.ON),
                            "another writer took the image's locks while a worker of the undrained thread back end"
                                    + " can still write it");
                } finally {
                    other.close();
                }
            } finally {
                fs.answerHeld();
            }
            closer.join(30_000);
            buffer.close();
        }
    }
}
