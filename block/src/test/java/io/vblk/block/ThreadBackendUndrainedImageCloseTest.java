package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
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
import io.vblk.aio.IoVector;
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
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty("vblk.aio.closeDrainMs");
    }

    @Test
    void imageCloseAfterAnUndrainedThreadBackendCloseReturns() throws Exception {
        Path at = Files.createDirectory(dir.resolve("mnt"));
        try (TestFuse fs = TestFuse.stalling(at, 1 << 20)) {
            assumeTrue(fs != null, "FUSE cannot be mounted here");
            fs.fill((byte) 0x5a);
            fs.holdReads(true);
            System.setProperty("vblk.aio.closeDrainMs", "500");
            Image image = Image.open(fs.file(), ImageOptions.defaults().readOnly(true));
            IoBackend io = IoBackends.open(BackendKind.THREADS, image, 8);
            Mapping buffer = Mapping.anonymous(BLOCK, false);
            IoVector v = new IoVector(1);
            v.add(buffer.address(), BLOCK);
            assertEquals(0, io.prepareRead(0, v, 7));
            assertEquals(1, io.submit());
            assertEquals(1, fs.awaitHeld(1, 30_000));
            // As RawDriver.close and Export.close do: the back end, then the image.
            Thread closer = new Thread(() -> {
                io.close();
                image.close();
            }, "closer");
            closer.setDaemon(true);
            closer.start();
            closer.join(20_000);
            try {
                if (closer.isAlive()) {
                    StringBuilder where = new StringBuilder();
                    for (StackTraceElement s : closer.getStackTrace()) {
                        where.append("\n  at ").append(s);
                    }
                    fail("backend close + image close still wait after 20 s:" + where);
                }
                assertFalse(io.closedDrained());
            } finally {
                fs.answerHeld();
            }
            closer.join(30_000);
            buffer.close();
        }
    }
}
