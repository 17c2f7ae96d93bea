package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoBackend;
import io.vblk.sys.FileSize;
import io.vblk.sys.ImageLock;
import io.vblk.sys.Native;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.QemuTools;

/**
 * Session 10: an export's image locks at its close, and {@code locking: "auto"}.
 *
 * <p>An export whose back ends did not close drained keeps its image's locks. Before,
 * {@link Export#close()} dropped them explicitly after the server's drain without asking the back
 * ends, so QEMU could open the image for writing while a ring the kernel had not torn down (or
 * an I/O thread's abandoned round) could still write it.
 *
 * <p>The undrained close is modelled on a real io_uring back end over a real file: a wrapper
 * reports {@code closedDrained() == false} (what a stranded ring or a stuck helper call reports;
 * neither can be produced on demand here) and holds, like the ring's registered file, a
 * duplicate of the image's descriptor, i.e. a kernel reference to its open file description,
 * until the test lets go of it. QEMU (qemu-io) is the other writer.
 *
 * <p>{@code locking: "auto"} ({@code vblk serve --locking auto}, {@code export.add}) on a file
 * system that has OFD locks: the same locks as {@code on}, taken silently, and QEMU refused the
 * same way. On a file system that refuses OFD locks (a FUSE one): sys {@code LockingAutoFuseTest}.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard, not a timed assertion
class ExportLocksTest {
    @TempDir
    Path dir;

    private ExportFixture x;

    @BeforeEach
    void fixture() {
        x = new ExportFixture(dir);
    }

    @AfterEach
    void close() {
        x.close();
    }

    private Path image() throws Exception {
        Path p = dir.resolve("d.img");
        Files.write(p, new byte[1 << 20]);
        return p;
    }

    /** Back ends that report an undrained close while {@code undrained[0]} holds. */
    private static UnaryOperator<IoBackend> reporting(boolean[] undrained) {
        return real -> new ForwardingBackend(real) {
            @Override
            public boolean closedDrained() {
                return !undrained[0] && super.closedDrained();
            }
        };
    }

    @Test
    void anUndrainedBackEndKeepsTheLocksUntilTheKernelLetsGoOfTheFile() throws Exception {
        assumeTrue(QemuTools.installed("qemu-io"), "qemu-utils is not installed (.ci/run installs it)");
        Path img = image();
        boolean[] undrained = {true};
        Export export = Export.open(x.spec("d0", img), x.log, null, x.control, reporting(undrained));
        int kernelRef = FileSize.duplicate(export.files().get(0).fd()); // the ring's registered file, as it were
        assertTrue(kernelRef >= 0);
        try {
            assertTrue(QemuTools.qemuIoWrite(img).writeLockRefused(), "the export writes the image");
            export.close();
            QemuTools.Run meanwhile = QemuTools.qemuIoWrite(img);
            assertTrue(meanwhile.writeLockRefused(),
                    "QEMU opened the image for writing while the kernel still held vblk's file: " + meanwhile);
            assertTrue(export.locksKept(), "a back end did not close drained");
            assertTrue(x.said("locks kept after an undrained close"), x.lines.toString());
        } finally {
            Native.libc().close(kernelRef);
        }
        // The kernel let go of the file: the locks went with it.
        QemuTools.awaitLockBytes(img, m -> m == 0, 10);
        QemuTools.Run after = QemuTools.qemuIoWrite(img);
        assertEquals(0, after.code(), after.toString());
    }

    @Test
    void aDrainedCloseDropsTheLocksAtOnceEvenWhileTheFileIsStillReferenced() throws Exception {
        assumeTrue(QemuTools.installed("qemu-io"), "qemu-utils is not installed (.ci/run installs it)");
        Path img = image();
        boolean[] undrained = {false};
        Export export = Export.open(x.spec("d0", img), x.log, null, x.control, reporting(undrained));
        int kernelRef = FileSize.duplicate(export.files().get(0).fd()); // an io_uring teardown still under way
        try {
            export.close();
            assertFalse(export.locksKept());
            QemuTools.Run after = QemuTools.qemuIoWrite(img);
            assertEquals(0, after.code(), "released explicitly after a drained close: " + after);
        } finally {
            Native.libc().close(kernelRef);
        }
    }

    @Test
    void autoOnAFileSystemWithOfdLocksLocksExactlyAsOn() throws Exception {
        assumeTrue(QemuTools.installed("qemu-io"), "qemu-utils is not installed (.ci/run installs it)");
        Path auto = dir.resolve("auto.img");
        Path on = dir.resolve("on.img");
        Files.write(auto, new byte[1 << 20]);
        Files.write(on, new byte[1 << 20]);
        ExportSpec spec = x.spec("auto", auto, "locking", "auto");
        assertEquals(ImageLock.Locking.AUTO, spec.locking);
        assertEquals("auto", spec.toParams().get("locking"));
        try (Export a = Export.open(spec, x.log, null, x.control);
             Export o = Export.open(x.spec("on", on, "locking", "on"), x.log, null, x.control)) {
            assertEquals(QemuTools.WRITER_BYTES, QemuTools.heldLockBytes(auto), "a writer's locks, as QEMU's");
            assertEquals(QemuTools.heldLockBytes(on), QemuTools.heldLockBytes(auto), "auto takes what on takes");
            QemuTools.Run w = QemuTools.qemuIoWrite(auto);
            assertTrue(w.writeLockRefused(), w.toString());
            assertEquals(0, QemuTools.qemuIo("-r", "-f", "raw", "-c", "read 0 512", auto.toString()).code(), "a reader fits");
            assertEquals("auto", a.spec.locking.cliName());
            assertEquals("on", o.spec.locking.cliName());
        }
        assertEquals(0, QemuTools.heldLockBytes(auto), "released with the export");
        assertEquals(0, QemuTools.qemuIoWrite(auto).code());
        assertFalse(x.said("refuses OFD locks"), "nothing to say: " + x.lines);
    }
}
