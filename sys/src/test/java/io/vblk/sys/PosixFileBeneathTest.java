package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link PosixFile#openFileOrBlockDeviceBeneath}: the kernel resolves the name beneath the
 * directory (openat2 RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so a directory component that is
 * a link leading out (as one swapped in after a check would be), {@code ..}, an absolute link or
 * a /proc magic link is refused, while links that stay inside are followed; a kernel without
 * openat2 gives a clear refusal.
 */
class PosixFileBeneathTest {
    @TempDir
    Path tmp;
    private Path dir;
    private Path outside;

    @BeforeEach
    void files() throws Exception {
        dir = Files.createDirectories(tmp.resolve("images"));
        outside = Files.createDirectories(tmp.resolve("elsewhere"));
        Files.writeString(outside.resolve("secret"), "secret");
        Files.createDirectories(dir.resolve("sub"));
        Files.writeString(dir.resolve("sub/base"), "inside");
    }

    @AfterEach
    void seam() {
        PosixFile.openat2Number = Linux.SYS_OPENAT2;
    }

    private static String read(PosixFile f) {
        NativeBuffer b = new NativeBuffer(64);
        long n = f.pread(b.address(), 64, 0);
        byte[] bytes = new byte[(int) n];
        b.buffer().getBytes(0, bytes);
        return new String(bytes, StandardCharsets.US_ASCII);
    }

    @Test
    void aNameBeneathOpens() throws Exception {
        Files.createSymbolicLink(dir.resolve("inner"), Path.of("sub/base")); // a link that stays inside
        for (Path name : new Path[] {Path.of("sub/base"), dir.resolve("sub/base"), Path.of("inner")}) {
            try (PosixFile f = PosixFile.openFileOrBlockDeviceBeneath(dir, name, true, false)) {
                assertEquals("inside", read(f), name.toString());
            }
        }
    }

    @Test
    void aDirectoryComponentSwappedForALinkOutIsRefused() throws Exception {
        // What a writer of the directory does between a realpath check and the open.
        Files.move(dir.resolve("sub"), dir.resolve("sub.old"));
        Files.createSymbolicLink(dir.resolve("sub"), outside);
        Files.writeString(outside.resolve("base"), "outside");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PosixFile.openFileOrBlockDeviceBeneath(dir, Path.of("sub/base"), true, false).close());
        assertTrue(e.getMessage().contains("lies outside the directory"), e.getMessage());
        // A relative link out too.
        Files.delete(dir.resolve("sub"));
        Files.createSymbolicLink(dir.resolve("sub"), Path.of("../elsewhere"));
        e = assertThrows(IllegalArgumentException.class,
                () -> PosixFile.openFileOrBlockDeviceBeneath(dir, Path.of("sub/base"), true, false).close());
        assertTrue(e.getMessage().contains("lies outside the directory"), e.getMessage());
    }

    @Test
    void dotDotAbsoluteAndMagicLinksAreRefused() throws Exception {
        Files.createSymbolicLink(dir.resolve("abs"), outside.resolve("secret"));
        Files.createSymbolicLink(dir.resolve("magic"), Path.of("/proc/self/root" + outside.resolve("secret")));
        for (Path name : new Path[] {Path.of("../elsewhere/secret"), Path.of("sub/../../elsewhere/secret"), Path.of("abs"),
            Path.of("magic")}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> PosixFile.openFileOrBlockDeviceBeneath(dir, name, true, false).close(), name.toString());
            assertTrue(e.getMessage().contains("lies outside the directory"), name + ": " + e.getMessage());
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PosixFile.openFileOrBlockDeviceBeneath(dir, outside.resolve("secret"), true, false).close());
        assertTrue(e.getMessage().contains("lies outside the directory"), e.getMessage());
    }

    @Test
    void stillOnlyARegularFileOrBlockDevice() throws Exception {
        assertEquals(0, new ProcessBuilder("mkfifo", dir.resolve("fifo").toString()).start().waitFor());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PosixFile.openFileOrBlockDeviceBeneath(dir, Path.of("fifo"), true, false).close());
        assertTrue(e.getMessage().contains("not a regular file or a block device"), e.getMessage());
    }

    @Test
    void aKernelWithoutOpenat2IsAClearRefusal() {
        PosixFile.openat2Number = 100_000; // no such system call: ENOSYS, as before Linux 5.6
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PosixFile.openFileOrBlockDeviceBeneath(dir, Path.of("sub/base"), true, false).close());
        assertTrue(e.getMessage().contains("no openat2"), e.getMessage());
    }
}
