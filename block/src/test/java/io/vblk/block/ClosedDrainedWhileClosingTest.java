package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.Mapping;
import io.vblk.testkit.TestFuse;

/**
 * (Review rev12a.) SlottedBackend.close sets closed first and marks the back end undrained only
 * after its wait (up to vblk.aio.closeDrainMs), so closedDrained() answers true for the whole
 * wait while the kernel still holds a read. BackendChoice.closedDrained relies on it being false
 * while an abandoned I/O thread is still closing its back end: Export.close would release the
 * image's locks then.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ClosedDrainedWhileClosingTest {
    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(StuckReads.CLOSE_DRAIN_PROPERTY);
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void closedDrainedIsFalseWhileCloseWaitsForTheKernel(BackendKind kind) throws Exception {
        try (TestFuse fs = StuckReads.mount(dir, 5000)) {
            Image image = Image.open(fs.file(), ImageOptions.defaults().readOnly(true));
            IoBackend io = IoBackends.open(kind, image, 8);
            Mapping buffer = Mapping.anonymous(StuckReads.BLOCK, false);
            StuckReads.stuckRead(io, fs, buffer);
            Thread closer = StuckReads.startCloser(io::close);
            boolean sawTrue = false;
            try {
                long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(2000);
                while (System.nanoTime() < until && closer.isAlive()) {
                    sawTrue |= io.closedDrained();
                    Thread.sleep(1);
                }
                assertTrue(closer.isAlive(), "close is still in its wait");
            } finally {
                fs.answerHeld(); // the kernel finishes the read: close returns drained, at once
                closer.join(30_000);
            }
            assertFalse(sawTrue, kind + ": closedDrained() was true while close still waited for a read the kernel holds");
            buffer.close();
        }
    }
}
