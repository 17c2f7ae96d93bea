package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.ImageLock.Locking;
import io.vblk.sys.ImageLock.LockedException;

/**
 * {@link ImageLock#INACTIVE} and {@link ImageLock#change}, the hand-over of a live migration, on
 * real OFD locks: the inactive set is a consistent reader that shares everything; switching to
 * the writer's use takes exactly QEMU's writer bytes, and a refused switch leaves exactly the
 * inactive set; switching back drops them again. qemu-io (where installed) checks the result
 * as QEMU sees it.
 */
class ImageLockChangeTest {
    @TempDir
    Path dir;

    private Path raw() throws Exception {
        Path p = dir.resolve("m.raw");
        Files.write(p, new byte[1 << 20]);
        return p;
    }

    /** The lock bytes 100..103 and 200..203 another description sees held, as a bit mask (bit i: 100+i, bit 4+i: 200+i). */
    private static int heldBytes(Path image) {
        int mask = 0;
        try (PosixFile f = PosixFile.open(image, true, false)) {
            for (int i = 0; i < ImageLock.PERM_COUNT; i++) {
                if (OfdLock.test(f.fd(), ImageLock.PERM_BASE + i, 1) != OfdLock.F_UNLCK) {
                    mask |= 1 << i;
                }
                if (OfdLock.test(f.fd(), ImageLock.SHARED_BASE + i, 1) != OfdLock.F_UNLCK) {
                    mask |= 1 << (4 + i);
                }
            }
        }
        return mask;
    }

    private static final int INACTIVE_BYTES = 0x01; // 100 only
    private static final int WRITER_BYTES = 0x01 | 0x02 | 0x08 | 0x20 | 0x80; // 100, 101, 103, 201, 203

    private static String qemuIo(String... args) throws Exception {
        String[] cmd = new String[args.length + 1];
        cmd[0] = "qemu-io";
        System.arraycopy(args, 0, cmd, 1, args.length);
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        return p.exitValue() + ": " + out;
    }

    @Test
    void inactiveIsAReaderThatSharesEverythingAndSwitchesToTheWriterAndBack() throws Exception {
        Path image = raw();
        try (PosixFile f = PosixFile.open(image, false, false)) {
            assertTrue(ImageLock.acquire(f.fd(), image, ImageLock.INACTIVE, Locking.ON, s -> { }));
            assertEquals(INACTIVE_BYTES, heldBytes(image));
            // A writer (the migration's source) and a reader both fit beside it.
            try (PosixFile w = PosixFile.open(image, false, false); PosixFile r = PosixFile.open(image, true, false)) {
                assertTrue(ImageLock.acquire(w.fd(), image, ImageLock.WRITER, Locking.ON, s -> { }));
                assertTrue(ImageLock.acquire(r.fd(), image, ImageLock.INACTIVE, Locking.ON, s -> { }));
                // The switch is refused while the writer holds the image, naming the permission;
                // the inactive set stays exactly as it was.
                LockedException e = assertThrows(LockedException.class,
                        () -> ImageLock.change(f.fd(), image, ImageLock.INACTIVE, ImageLock.WRITER, Locking.ON));
                assertTrue(e.getMessage().contains("\"write\" lock") && e.heldByThisProcess(), e.getMessage());
                ImageLock.release(w.fd());
                ImageLock.release(r.fd());
                assertEquals(INACTIVE_BYTES, heldBytes(image), "the refused switch left the inactive set");
            }
            ImageLock.change(f.fd(), image, ImageLock.INACTIVE, ImageLock.WRITER, Locking.ON);
            assertEquals(WRITER_BYTES, heldBytes(image));
            try (PosixFile w = PosixFile.open(image, false, false)) {
                assertThrows(LockedException.class, () -> ImageLock.acquire(w.fd(), image, ImageLock.WRITER, Locking.ON, s -> { }));
            }
            if (Files.isExecutable(Path.of("/usr/bin/qemu-io"))) {
                String out = qemuIo("-f", "raw", "-c", "write 0 4k", image.toString());
                assertTrue(out.contains("Failed to get \"write\" lock"), out);
            }
            ImageLock.change(f.fd(), image, ImageLock.WRITER, ImageLock.INACTIVE, Locking.ON);
            assertEquals(INACTIVE_BYTES, heldBytes(image));
            if (Files.isExecutable(Path.of("/usr/bin/qemu-io"))) {
                String out = qemuIo("-f", "raw", "-c", "write -P 0x11 0 4k", image.toString());
                assertTrue(out.startsWith("0: "), "a writer beside an inactive image: " + out);
            }
        }
    }

    @Test
    void aReaderHoldingTheImageRefusesTheSwitchToWriter() throws Exception {
        Path image = raw();
        try (PosixFile f = PosixFile.open(image, false, false); PosixFile r = PosixFile.open(image, true, false)) {
            assertTrue(ImageLock.acquire(f.fd(), image, ImageLock.INACTIVE, Locking.ON, s -> { }));
            // A reader that does not share write (a read-only export, qemu-img without -U).
            assertTrue(ImageLock.acquire(r.fd(), image, ImageLock.READER, Locking.ON, s -> { }));
            LockedException e = assertThrows(LockedException.class,
                    () -> ImageLock.change(f.fd(), image, ImageLock.INACTIVE, ImageLock.WRITER, Locking.ON));
            assertTrue(e.getMessage().startsWith("Failed to get \"write\" lock"), e.getMessage());
            ImageLock.release(r.fd());
            assertEquals(INACTIVE_BYTES, heldBytes(image));
        }
    }

    @Test
    void offChangesNothing() throws Exception {
        Path image = raw();
        try (PosixFile f = PosixFile.open(image, false, false)) {
            ImageLock.change(f.fd(), image, ImageLock.INACTIVE, ImageLock.WRITER, Locking.OFF);
            assertEquals(0, heldBytes(image));
        }
    }

    @Test
    void qemuIoSeesAnInactiveImageAsShared() throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/qemu-io")), "qemu-utils is not installed (.ci/run installs it)");
        Path image = raw();
        try (PosixFile f = PosixFile.open(image, false, false)) {
            assertTrue(ImageLock.acquire(f.fd(), image, ImageLock.INACTIVE, Locking.ON, s -> { }));
            String read = qemuIo("-r", "-f", "raw", "-c", "read 0 4k", image.toString());
            assertTrue(read.startsWith("0: "), read);
        }
    }
}
