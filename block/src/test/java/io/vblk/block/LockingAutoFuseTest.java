package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.ImageLock;
import io.vblk.sys.ImageLock.Locking;
import io.vblk.sys.NativeException;
import io.vblk.sys.PosixFile;
import io.vblk.testkit.TestFuse;

/**
 * {@code locking=auto} on a file system that refuses OFD locks ({@link TestFuse#refusingLocks}, a
 * FUSE file system that answers every lock request with an errno, as one without lock support does): auto
 * serves the image unlocked and says so once; on refuses it with the errno and the hint.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS) // a hang guard, not a timed assertion
class LockingAutoFuseTest {
    @TempDir
    Path dir;

    private TestFuse mount(int errno) throws Exception {
        Path at = Files.createDirectory(dir.resolve("mnt" + errno));
        TestFuse fs = TestFuse.refusingLocks(at, errno);
        assumeTrue(fs != null, "FUSE cannot be mounted here (no /dev/fuse or no CAP_SYS_ADMIN)");
        return fs;
    }

    @Test
    void autoServesUnlockedWhereTheFileSystemRefusesLocksAndOnRefusesTheImage() throws Exception {
        for (int errno : new int[] {Errno.EOPNOTSUPP, Errno.ENOLCK, Errno.EINVAL}) {
            try (TestFuse fs = mount(errno); PosixFile f = PosixFile.open(fs.file(), false, false)) {
                List<String> said = new ArrayList<>();
                assertFalse(ImageLock.acquire(f.fd(), fs.file(), ImageLock.WRITER, Locking.AUTO, said::add),
                        "auto takes no lock where the file system has none (errno " + errno + ")");
                assertTrue(fs.lockRequests() > 0, "the refusal came from the file system");
                assertEquals(1, said.size(), said.toString());
                assertTrue(said.get(0).contains("refuses OFD locks (errno " + errno + ")")
                        && said.get(0).contains("locking=auto"), said.get(0));
                NativeException on = assertThrows(NativeException.class,
                        () -> ImageLock.acquire(f.fd(), fs.file(), ImageLock.WRITER, Locking.ON, s -> { }));
                assertEquals(errno, on.errno(), on.getMessage());
                assertTrue(on.getMessage().contains("locking=auto or off"), on.getMessage());
            }
        }
    }

    @Test
    void autoStillRefusesAConflictWhereTheFileSystemHasLocks() throws Exception {
        // The control: on a file system with locks, auto is on (a second writer is refused).
        Path image = dir.resolve("local.raw");
        Files.write(image, new byte[4096]);
        try (PosixFile a = PosixFile.open(image, false, false); PosixFile b = PosixFile.open(image, false, false)) {
            assertTrue(ImageLock.acquire(a.fd(), image, ImageLock.WRITER, Locking.AUTO, s -> { }));
            assertThrows(ImageLock.LockedException.class,
                    () -> ImageLock.acquire(b.fd(), image, ImageLock.WRITER, Locking.AUTO, s -> { }));
        }
    }
}
