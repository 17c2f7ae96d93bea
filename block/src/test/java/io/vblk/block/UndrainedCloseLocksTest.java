package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.ImageLock.Locking;
import io.vblk.sys.Native;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.QemuTools;

/**
 * Review rev9b (MEDIUM): a driver that owns its image released QEMU's image locks explicitly at
 * close even when its back end's close did not drain (a stranded io_uring slot, a stuck helper
 * call): QEMU could then open the image for writing while vblk's stale writes still land. Now
 * the locks are released explicitly only after a drained close; otherwise they stay on the open
 * file description until the kernel lets go of it. A dup of the descriptor stands in for the
 * kernel's hold on the file (an in-flight operation's reference); the back end's "not drained"
 * answer is a forwarding wrapper over a real one (a real stranded ring is shown in
 * IoUringSingleIssuerTest).
 */
class UndrainedCloseLocksTest {
    @TempDir
    Path dir;

    @Test
    void locksAreReleasedAtCloseOnlyWhenTheBackEndDrained() throws Exception {
        assumeTrue(QemuTools.installed("qemu-io"), "qemu-utils is not installed (.ci/run installs it)");
        assertEquals(0, qemuWrite(closeHoldingTheFile(true)), "a drained close releases the locks at once");
        assertNotEquals(0, qemuWrite(closeHoldingTheFile(false)),
                "an undrained close leaves the locks with the file the kernel still holds");
    }

    /** Opens a locked image under an owning raw driver, closes it, and returns the image's path. */
    private Path closeHoldingTheFile(boolean drained) throws IOException {
        Path img = dir.resolve("img-" + drained);
        Files.write(img, new byte[1 << 20]);
        Image image = ImageLocks.openLocked(img, ImageOptions.defaults().direct(false), Locking.ON);
        IoBackend real = IoBackends.open(BackendKind.THREADS, image, BackendOptions.depth(4));
        IoBackend backend = new ForwardingBackend(real) {
            @Override
            public boolean closedDrained() {
                return drained && real.closedDrained();
            }
        };
        held = Native.libc().dup(image.fd());
        assertTrue(held >= 0);
        RawDriver.owning(backend, image).close();
        return img;
    }

    private int held = -1;

    private int qemuWrite(Path img) throws Exception {
        try {
            return QemuTools.qemuIoWrite(img).code();
        } finally {
            Native.libc().close(held);
            held = -1;
        }
    }
}
