package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.ImageLock;
import io.vblk.sys.ImageLock.Locking;

/**
 * A vblk process serving an image through io_uring (the image a registered file of its ring) is
 * killed with SIGKILL, as the crash test does: a restarted vblk must get the image, although the
 * dead process's ring may hold the file (and its locks) until the kernel's teardown ends.
 */
class ImageLockProcessDeathTest {
    @TempDir
    Path dir;

    @Test
    void aKilledHolderWithAnIoUringRingReleasesTheImageToTheNextVblk() throws Exception {
        Path image = dir.resolve("d.raw");
        Files.write(image, new byte[1 << 20]);
        for (int round = 0; round < 3; round++) {
            Process child = holder(image);
            ImageLock.LockedException e = assertThrows(ImageLock.LockedException.class,
                    () -> ImageLocks.openLocked(image, ImageOptions.defaults().direct(false), Locking.ON).close());
            assertTrue(e.holder().startsWith("vblk (pid " + child.pid() + ")"), e.getMessage());
            child.destroyForcibly();
            assertTrue(child.waitFor(60, TimeUnit.SECONDS), "the killed holder JVM never ended"); // a hang guard
            try (Image again = ImageLocks.openLocked(image, ImageOptions.defaults().direct(false), Locking.ON)) {
                assertFalse(again.isClosed());
            }
        }
    }

    private static Process holder(Path image) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>();
        cmd.add(java);
        cmd.addAll(io.vblk.testkit.JvmFlags.list()); // the parent pom's one list
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), Holder.class.getName(), image.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String line = new BufferedReader(new InputStreamReader(p.getInputStream())).readLine();
        assertEquals("locked", line);
        return p;
    }

    /** The vblk side: the image locked, and registered with an io_uring ring. */
    public static final class Holder {
        public static void main(String[] args) throws Exception {
            Image image = ImageLocks.openLocked(Path.of(args[0]), ImageOptions.defaults().direct(false), Locking.ON);
            IoBackend ring = IoBackends.open(BackendKind.IO_URING, image, 64);
            System.out.println(ring != null ? "locked" : "no ring");
            System.out.flush();
            Thread.sleep(120_000);
        }
    }
}
