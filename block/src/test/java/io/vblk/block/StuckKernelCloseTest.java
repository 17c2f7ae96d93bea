package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.agrona.UnsafeApi;
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
 * A raw back end whose read the kernel never finishes (a FUSE file whose server stopped
 * answering, {@link TestFuse#holdReads}, as a hung FUSE, NFS or iSCSI device) used to hold its
 * close for ever: io_uring waited in io_uring_enter without limit; Linux AIO waited 60 s and then
 * in io_destroy, which waits in the kernel for what is in flight; the thread back end waited for
 * its worker, stuck in preadv. So BlockDevice.close(ms),
 * export.remove and shutdown hung with it. Now close waits {@code vblk.aio.closeDrainMs} and
 * returns undrained, counted, freeing nothing the kernel may still write: once the server
 * answers, the kernel completes the read into the caller's buffer (still mapped, the JVM alive)
 * and the back end's reaper releases the rest. Real parts: a FUSE mount served from this JVM,
 * the kernel's io_uring and AIO, the thread back end's workers. The 20 s join is a hang guard, not a timed assertion.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class StuckKernelCloseTest {
    private static final int BLOCK = StuckReads.BLOCK;
    private static final byte FILL = StuckReads.FILL;

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(StuckReads.CLOSE_DRAIN_PROPERTY);
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void closeReturnsWhileTheKernelHoldsAReadAndFreesNothingItWrites(BackendKind kind) throws Exception {
        try (TestFuse fs = StuckReads.mount(dir, 500)) {
            Image image = Image.open(fs.file(), ImageOptions.defaults().readOnly(true));
            IoBackend io = IoBackends.open(kind, image, 8);
            // The caller's memory (a guest's, in a device): the kernel reads into it.
            Mapping buffer = Mapping.anonymous(BLOCK, false);
            StuckReads.stuckRead(io, fs, buffer);
            int undrainedBefore = IoBackends.undrainedBackends();

            Thread closer = StuckReads.startCloser(io::close);
            try {
                StuckReads.assertCloserEnds(closer, kind + ": a close with a read the kernel never finishes");
                assertFalse(io.closedDrained(), "the read is still with the kernel");
                assertEquals(undrainedBefore + 1, IoBackends.undrainedBackends(), "counted undrained");
                assertEquals(0, UnsafeApi.getByte(buffer.address()), "nothing read yet");
            } finally {
                // The server answers: the kernel completes the read (and a hung close, before the fix, returns).
                fs.answerHeld();
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (UnsafeApi.getByte(buffer.address()) != FILL || UnsafeApi.getByte(buffer.address() + BLOCK - 1) != FILL) {
                assertTrue(System.nanoTime() < deadline, "the kernel never completed the read into the buffer");
                Thread.sleep(5);
            }
            // The reaper saw it finish: the back end is released and drained after all.
            while (!io.closedDrained() || IoBackends.undrainedBackends() != undrainedBefore) {
                assertTrue(System.nanoTime() < deadline, "the reaper never released the back end");
                Thread.sleep(5);
            }
            closer.join(30_000);
            assertFalse(closer.isAlive());
            image.close();
            buffer.close();
        }
    }
}
