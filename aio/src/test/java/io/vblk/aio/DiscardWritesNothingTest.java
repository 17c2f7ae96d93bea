package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.Linux;

/**
 * rev13a: DISCARD is advisory (virtio-blk promises zeroed reads only for WRITE_ZEROES). Where no
 * hole can be punched (fallocate off, or a punch hole the file system refused, remembered) a
 * discard completes OK and writes nothing: before, it fell back to ZERO_RANGE or written zeros,
 * up to 2 GiB per 16-byte request outside the bytes/s throttle. WRITE_ZEROES still zeroes.
 */
class DiscardWritesNothingTest {
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void aDiscardWithoutFallocateWritesNothing(BackendKind kind) throws IOException {
        discardLeavesTheFileAlone(kind, ImageOptions.defaults().fallocate(false), false);
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void aDiscardAfterARefusedPunchHoleWritesNothing(BackendKind kind) throws IOException {
        discardLeavesTheFileAlone(kind, ImageOptions.defaults(), true);
    }

    private void discardLeavesTheFileAlone(BackendKind kind, ImageOptions options, boolean refusePunchHole) throws IOException {
        Path path = Files.createFile(dir.resolve("img"));
        byte[] data = IoBackendTest.random(64 * BLOCK, 7);
        IoBackendTest.writeFile(path, 0, data);
        try (Image image = Image.open(path, options);
             IoBackend io = IoBackends.open(kind, image, 8)) {
            if (refusePunchHole) {
                image.refused(Linux.FALLOC_FL_PUNCH_HOLE | Linux.FALLOC_FL_KEEP_SIZE); // as a file system's EOPNOTSUPP
            }
            Recorder rec = new Recorder(8);
            assertEquals(0, io.prepareDiscard(4 * BLOCK, 8 * BLOCK, 0));
            assertEquals(0, io.prepareDiscard(0, 64 * BLOCK, 1));
            IoBackendTest.submitAndDrain(io, rec);
            rec.assertAll(0, 2, 0);
            assertEquals(0, io.prepareWriteZeroes(20 * BLOCK, 2 * BLOCK, true, 2));
            IoBackendTest.submitAndDrain(io, rec);
            assertEquals(0, rec.result(2));
        }
        byte[] expected = data.clone();
        java.util.Arrays.fill(expected, 20 * BLOCK, 22 * BLOCK, (byte) 0); // the write-zeroes, as ever
        assertArrayEquals(expected, IoBackendTest.readFile(path, 0, 64 * BLOCK), "the discards wrote zeros");
    }
}
