package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * rev16a M1: Linux reports a writeback error once per open file (and may drop the pages it could
 * not write), so after one failed fdatasync a retried one succeeds with the data gone. A failed
 * flush is sticky on the image: every later flush, on any back end of the file, and
 * {@link Image#fdatasync()} (the engine's and the migration hand-over's sync) fail with EIO.
 *
 * <p>The failed fdatasync is injected ({@code Image.injectFlushErrno}: the next successful flush
 * completion reports the errno instead): there is no dm-error or fault-injecting file system
 * here without root. Everything after it is real: the kernel's flushes succeed again.
 */
class StickyFlushFailureTest {
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void oneFailedFlushFailsEveryLaterFlushOnEveryBackEndAndSync(BackendKind kind) throws IOException {
        Path path = Files.createFile(dir.resolve("img"));
        IoBackendTest.writeFile(path, 0, new byte[64 * BLOCK]);
        NativeBuffer b = new NativeBuffer(BLOCK, BLOCK);
        IoVector v = new IoVector(1);
        v.add(b.address(), BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = IoBackends.open(kind, image, 8)) {
            Recorder rec = new Recorder(16);
            assertEquals(0, io.prepareWrite(0, v, 0));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(0, io.prepareFlush(1));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(0, rec.result(1), "a healthy flush");
            assertEquals(0, image.fdatasync());

            assertEquals(0, io.prepareWrite(BLOCK, v, 2));
            IoBackendTest.submitAndDrain(io, rec);
            image.injectFlushErrno = Errno.EIO; // the write-back of that write failed
            assertEquals(0, io.prepareFlush(3));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(-Errno.EIO, rec.result(3), "the failed flush");

            assertEquals(0, io.prepareFlush(4));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(-Errno.EIO, rec.result(4), "a retried flush fails too: the kernel reported the error once");
            assertTrue(image.flushFailed());
            assertEquals(-Errno.EIO, image.fdatasync(), "so does a sync of the image (hand-over, engine)");
            try (IoBackend other = IoBackends.open(kind == BackendKind.THREADS ? BackendKind.IO_URING : BackendKind.THREADS, image, 8)) {
                assertEquals(0, other.prepareFlush(5));
                IoBackendTest.submitAndDrain(other, rec);
                assertEquals(-Errno.EIO, rec.result(5), "and a flush of another back end on the file");
            }
            assertEquals(0, io.prepareWrite(2 * BLOCK, v, 6));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(BLOCK, rec.result(6), "writes go on");
        }
    }

    /**
     * A clean close of a writable image ends with an fdatasync (QEMU flushes on close too): seen
     * through the same seam, the close's sync is the flush that reports the injected failure. A
     * read-only image is never synced.
     */
    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "THREADS"})
    void aCleanCloseOfAWritableImageEndsWithAnFdatasync(BackendKind kind) throws IOException {
        Path path = Files.createFile(dir.resolve("img"));
        IoBackendTest.writeFile(path, 0, new byte[64 * BLOCK]);
        NativeBuffer b = new NativeBuffer(BLOCK, BLOCK);
        IoVector v = new IoVector(1);
        v.add(b.address(), BLOCK);
        Image image = Image.open(path, ImageOptions.defaults());
        try (IoBackend io = IoBackends.open(kind, image, 8)) {
            Recorder rec = new Recorder(4);
            assertEquals(0, io.prepareWrite(0, v, 0));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(BLOCK, rec.result(0));
        }
        image.injectFlushErrno = Errno.EIO;
        image.close();
        assertTrue(image.flushFailed(), "the close synced the file (and met the injected failure)");

        Image readOnly = Image.open(path, ImageOptions.defaults().readOnly(true));
        readOnly.injectFlushErrno = Errno.EIO;
        readOnly.close();
        assertEquals(false, readOnly.flushFailed(), "a read-only image is never synced");
    }
}
