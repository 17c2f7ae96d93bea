package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;

class ImageTest {
    @TempDir
    Path dir;

    private Path file(long size) throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(size);
        }
        return path;
    }

    @Test
    void directImagesTakeTheirAlignmentFromTheKernel() throws IOException {
        Path path = file(1 << 20);
        // Written data: ext4 answers a read of a hole without checking its alignment.
        IoBackendTest.writeFile(path, 0, IoBackendTest.random(1 << 20, 43));
        try (Image image = Image.open(path, ImageOptions.defaults())) {
            assertEquals(1 << 20, image.sizeBytes());
            assertTrue(image.direct());
            assertFalse(image.blockDevice());
            int mem = image.memoryAlignment();
            int off = image.offsetAlignment();
            assertTrue(mem > 1 && Integer.bitCount(mem) == 1, "memory alignment " + mem);
            assertTrue(off > 1 && Integer.bitCount(off) == 1, "offset alignment " + off);
            assertTrue(image.logicalBlockSize() >= Math.max(512, off));
            // The rule is real: a file offset off the alignment is refused by the kernel.
            NativeBuffer buf = new NativeBuffer(Linux.PAGE_SIZE, Linux.PAGE_SIZE);
            long rc = io.vblk.sys.Native.result(io.vblk.sys.Native.libc().pread(image.fd(), buf.address(), off, off / 2));
            assertEquals(-Errno.EINVAL, rc);
            assertEquals(off, io.vblk.sys.Native.result(io.vblk.sys.Native.libc().pread(image.fd(), buf.address(), off, off)));
        }
    }

    @Test
    void bufferedImagesHaveNoAlignment() throws IOException {
        try (Image image = Image.open(file(8192), ImageOptions.defaults().direct(false).readOnly(true))) {
            assertEquals(1, image.memoryAlignment());
            assertEquals(1, image.offsetAlignment());
            assertEquals(512, image.logicalBlockSize());
            assertTrue(image.readOnly());
        }
    }

    @Test
    void aMissingFileNamesThePath() {
        NativeException e = assertThrows(NativeException.class,
                () -> Image.open(dir.resolve("missing.img"), ImageOptions.defaults()));
        assertEquals(Errno.ENOENT, e.errno());
        assertTrue(e.getMessage().contains("missing.img"), e.getMessage());
    }

    @Test
    void aRefusedZeroRangeIsRememberedAndZerosAreWritten() throws IOException {
        Path shm = Path.of("/dev/shm");
        assumeTrue(Files.isDirectory(shm) && Files.isWritable(shm), "no writable /dev/shm");
        Path path = Files.createTempFile(shm, "vblk-image-test", ".img");
        try {
            byte[] data = IoBackendTest.random(16 * 4096, 41);
            IoBackendTest.writeFile(path, 0, data);
            try (Image image = Image.open(path, ImageOptions.defaults().direct(false))) {
                int zeroRange = image.writeZeroesMode(false);
                assertEquals(Linux.FALLOC_FL_ZERO_RANGE | Linux.FALLOC_FL_KEEP_SIZE, zeroRange);
                assertEquals(0, image.zeroRange(4096, 8192, zeroRange, false, () -> false));
                long refused = io.vblk.sys.Native.result(io.vblk.sys.Native.libc().fallocate(image.fd(), zeroRange, 0, 4096));
                assumeTrue(Image.isRefusal(refused), "this tmpfs does zero range: nothing to fall back from");
                assertEquals(0, image.writeZeroesMode(false), "the refusal is remembered");
            }
            byte[] expected = data.clone();
            java.util.Arrays.fill(expected, 4096, 3 * 4096, (byte) 0);
            assertArrayEquals(expected, IoBackendTest.readFile(path, 0, 16 * 4096));
        } finally {
            Files.deleteIfExists(path);
        }
    }

    private static void assertArrayEquals(byte[] expected, byte[] actual) {
        org.junit.jupiter.api.Assertions.assertArrayEquals(expected, actual);
    }
}
