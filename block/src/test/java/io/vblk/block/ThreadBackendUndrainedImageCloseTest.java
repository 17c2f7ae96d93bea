package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertFalse;

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
import io.vblk.sys.Mapping;
import io.vblk.testkit.TestFuse;

/**
 * (Review rev12a.) the thread back end's close returns undrained while a worker is stuck in a read
 * on a hung FUSE file, but the caller (RawDriver.close, Export.close) then closes the Image, whose
 * FileChannel.close waits (NativeThreadSet.signalAndWait) for every thread blocked in the channel:
 * the worker. So export.remove / BlockDevice.close still hang for ever on the thread back end.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ThreadBackendUndrainedImageCloseTest {
    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(StuckReads.CLOSE_DRAIN_PROPERTY);
    }

    @Test
    void imageCloseAfterAnUndrainedThreadBackendCloseReturns() throws Exception {
        try (TestFuse fs = StuckReads.mount(dir, 500)) {
            Image image = Image.open(fs.file(), ImageOptions.defaults().readOnly(true));
            IoBackend io = IoBackends.open(BackendKind.THREADS, image, 8);
            Mapping buffer = Mapping.anonymous(StuckReads.BLOCK, false);
            StuckReads.stuckRead(io, fs, buffer);
            // As RawDriver.close and Export.close do: the back end, then the image.
            Thread closer = StuckReads.startCloser(() -> {
                io.close();
                image.close();
            });
            try {
                StuckReads.assertCloserEnds(closer, "the back end's close and the image's close");
                assertFalse(io.closedDrained());
            } finally {
                fs.answerHeld();
            }
            closer.join(30_000);
            buffer.close();
        }
    }
}
