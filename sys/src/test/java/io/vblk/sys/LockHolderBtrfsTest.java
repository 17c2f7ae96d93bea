package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.ImageLock.Locking;

/**
 * Regression (review 9b): on btrfs, stat(2)'s st_dev is the subvolume's anonymous device while
 * the kernel's lock lines (fdinfo, /proc/locks) carry the superblock's, so no holder was ever
 * named: every refusal waited the 3 s meant for a dying process's ring, called the holder
 * "another process", and a lock held by this very process was not recognised as such. A btrfs
 * image on a loop device (needs root and mkfs.btrfs, as the CI has; skipped otherwise).
 */
class LockHolderBtrfsTest {
    @TempDir
    Path dir;

    @Test
    void aHolderOnBtrfsIsNamed() throws Exception {
        Path mkfs = Files.isExecutable(Path.of("/usr/sbin/mkfs.btrfs")) ? Path.of("/usr/sbin/mkfs.btrfs") : Path.of("/sbin/mkfs.btrfs");
        assumeTrue(Files.isExecutable(mkfs), "mkfs.btrfs (btrfs-progs) is not installed");
        Path backing = dir.resolve("btrfs.img");
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
            f.setLength(128L << 20);
        }
        assumeTrue(run(mkfs.toString(), "-q", "-f", backing.toString()) == 0, "mkfs.btrfs failed");
        Path mnt = Files.createDirectories(dir.resolve("mnt"));
        assumeTrue(run("mount", "-o", "loop", backing.toString(), mnt.toString()) == 0, "cannot mount (not root?)");
        try {
            Path image = mnt.resolve("disk.raw");
            Files.write(image, new byte[1 << 20]);
            try (PosixFile holder = PosixFile.open(image, false, false);
                 PosixFile second = PosixFile.open(image, false, false)) {
                assertTrue(ImageLock.acquire(holder.fd(), image, ImageLock.WRITER, Locking.ON, s -> { }));
                ImageLock.LockedException e = assertThrows(ImageLock.LockedException.class,
                        () -> ImageLock.acquire(second.fd(), image, ImageLock.WRITER, Locking.ON, s -> { }));
                assertEquals(LockHolder.thisProcess(), e.holder(), e.getMessage());
                assertTrue(e.heldByThisProcess());
            }
        } finally {
            run("umount", "-l", mnt.toString());
        }
    }

    @Test
    void aProcessCallingItselfThisProcessIsNotUs() {
        ImageLock.LockedException e = new ImageLock.LockedException("m", LockHolder.THIS_PROCESS + " (pid 1)", 0, 0, false);
        assertTrue(!e.heldByThisProcess() || ProcessHandle.current().pid() == 1);
    }

    private static int run(String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            return -1;
        }
        return p.exitValue();
    }
}
