package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.PosixFile;

/**
 * A closed {@link PosixFile} or {@link Image} must not act on its old descriptor number: the
 * kernel hands that number to the next open, so a late resize, write, fallocate or fsync would
 * land on another disk. Each test closes A, opens B on the very same number (asserted), calls
 * every operation on A and checks that A refuses and B's size and content are untouched.
 */
class ClosedDescriptorTest {
    private static final int SIZE = 64 << 10;

    @TempDir
    Path dir;

    private Path file(String name, int seed) throws IOException {
        Path path = dir.resolve(name);
        Files.write(path, IoBackendTest.random(SIZE, seed));
        return path;
    }

    @Test
    void aClosedPosixFileNeverTouchesTheFileThatReusesItsNumber() throws IOException {
        assumeTrue(Image.LINUX);
        Path pathA = file("a", 1);
        Path pathB = file("b", 2);
        byte[] contentB = Files.readAllBytes(pathB);
        PosixFile a = PosixFile.open(pathA, false, false);
        int number = a.fd();
        a.close();
        try (PosixFile b = PosixFile.open(pathB, false, false)) {
            assertEquals(number, b.fd(), "the kernel reuses the lowest free number");
            NativeBuffer buf = new NativeBuffer(Linux.PAGE_SIZE, Linux.PAGE_SIZE);
            assertThrows(IllegalStateException.class, a::fd);
            assertThrows(IllegalStateException.class, a::sizeBytes);
            assertEquals(-Errno.EBADF, a.pwrite(buf.address(), Linux.PAGE_SIZE, 0));
            assertEquals(-Errno.EBADF, a.pread(buf.address(), Linux.PAGE_SIZE, 0));
            assertEquals(-Errno.EBADF, a.fallocate(Linux.FALLOC_FL_PUNCH_HOLE | Linux.FALLOC_FL_KEEP_SIZE, 0, SIZE));
            assertEquals(-Errno.EBADF, a.fallocate(0, 0, 4L * SIZE));
            assertEquals(-Errno.EBADF, a.fdatasync());
            a.close();
            assertEquals(SIZE, b.sizeBytes());
        }
        assertEquals(SIZE, Files.size(pathB));
        assertArrayEquals(contentB, Files.readAllBytes(pathB));
    }

    @Test
    void aClosedImageNeverTouchesTheFileThatReusesItsNumber() throws IOException {
        assumeTrue(Image.LINUX);
        Path pathA = file("a", 3);
        Path pathB = file("b", 4);
        byte[] contentB = Files.readAllBytes(pathB);
        Image a = Image.open(pathA, ImageOptions.defaults().direct(false));
        int number = a.fd();
        a.close();
        try (Image b = Image.open(pathB, ImageOptions.defaults().direct(false))) {
            assertEquals(number, b.fd(), "the kernel reuses the lowest free number");
            assertThrows(IllegalStateException.class, a::fd);
            assertThrows(IllegalStateException.class, () -> a.resize(2L * SIZE));
            assertThrows(IllegalStateException.class, () -> a.resize(SIZE / 2));
            assertThrows(IOException.class, a::channel);
            assertThrows(IOException.class, a::bufferedChannel);
            assertEquals(-Errno.EBADF, a.extendTo(4L * SIZE));
            assertEquals(-Errno.EBADF, a.fdatasync());
            assertEquals(-Errno.EBADF, a.zeroRange(0, SIZE, a.discardMode(), true, () -> false));
            assertEquals(-Errno.EBADF, a.zeroRange(0, SIZE, a.writeZeroesMode(false), false, () -> false));
            assertEquals(-Errno.EBADF, a.zeroRange(0, SIZE, 0, false, () -> false));
            assertEquals(-Errno.EBADF, a.writeZeros(0, SIZE, () -> false));
            assertEquals(SIZE, a.sizeBytes(), "a refused resize leaves the recorded size alone");
            assertEquals(SIZE, b.sizeBytes());
        }
        assertEquals(SIZE, Files.size(pathB));
        byte[] after = Files.readAllBytes(pathB);
        assertArrayEquals(contentB, after, "B changed at " + mismatch(contentB, after));
    }

    private static int mismatch(byte[] a, byte[] b) {
        return Arrays.mismatch(a, b);
    }
}
