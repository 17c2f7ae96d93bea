package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The thread back end on an image opened through java.nio only: the path a non-Linux host
 * takes (no descriptor, no eventfd, no fallocate).
 */
class PortableThreadsTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    private Path file(int blocks) throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength((long) blocks * BLOCK);
        }
        return path;
    }

    @Test
    void roundTripZeroingAndFlushWithoutNativeCalls() throws Exception {
        Path path = file(64);
        IoBackendTest.writeFile(path, 0, IoBackendTest.random(64 * BLOCK, 31));
        try (Image image = Image.open(path, ImageOptions.defaults().portable(true));
             IoBackend io = IoBackends.open(BackendKind.THREADS, image, 16);
             GuestMemory guest = new GuestMemory(16 * BLOCK)) {
            assertTrue(image.portable());
            assertEquals(-1, image.fd());
            assertNull(io.completionEvent());
            guest.fillRandom(0, 4 * BLOCK + 1, 37);
            Recorder rec = new Recorder(16);
            IoVector aligned = new IoVector(1);
            aligned.add(guest.address(0), 2 * BLOCK);
            IoVector unaligned = new IoVector(2);
            unaligned.add(guest.address(2 * BLOCK + 1), 1000);
            unaligned.add(guest.address(2 * BLOCK + 1001), 3096);
            assertEquals(0, io.prepareWrite(0, aligned, 0));
            assertEquals(0, io.prepareWrite(8 * BLOCK, unaligned, 1));
            assertEquals(0, io.prepareDiscard(16 * BLOCK, 4 * BLOCK, 2));
            assertEquals(0, io.prepareWriteZeroes(24 * BLOCK, 4 * BLOCK, false, 3));
            assertEquals(0, io.prepareFlush(4));
            io.submit();
            // No eventfd here: sleep with awaitCompletions.
            while (rec.count() < 5) {
                if (io.poll(rec, 16) == 0) {
                    io.awaitCompletions(1000);
                }
            }
            assertEquals(2 * BLOCK, rec.result(0));
            assertEquals(BLOCK, rec.result(1));
            rec.assertAll(2, 5, 0);
            assertArrayEquals(guest.copy(0, 2 * BLOCK), IoBackendTest.readFile(path, 0, 2 * BLOCK));
            assertArrayEquals(guest.copy(2 * BLOCK + 1, BLOCK), IoBackendTest.readFile(path, 8 * BLOCK, BLOCK));
            // 16..20 was discarded: advisory, and without a descriptor nothing is done (no zeros written).
            assertArrayEquals(new byte[4 * BLOCK], IoBackendTest.readFile(path, 24 * BLOCK, 4 * BLOCK));
            assertEquals(0, io.prepareRead(8 * BLOCK, IoBackendTest.one(guest.address(9 * BLOCK + 5), BLOCK), 5));
            io.submit();
            io.drain(rec);
            assertEquals(BLOCK, rec.result(5));
            assertArrayEquals(guest.copy(2 * BLOCK + 1, BLOCK), guest.copy(9 * BLOCK + 5, BLOCK));
        }
    }

    @Test
    void awaitCompletionsTimesOutWhenIdle() throws Exception {
        try (Image image = Image.open(file(4), ImageOptions.defaults().portable(true));
             IoBackend io = IoBackends.open(BackendKind.THREADS, image, 4)) {
            long start = System.nanoTime();
            assertEquals(0, io.awaitCompletions(20));
            assertTrue(System.nanoTime() - start >= 15_000_000L);
        }
    }

    @Test
    void kernelBackEndsRefusePortableImages() throws Exception {
        try (Image image = Image.open(file(4), ImageOptions.defaults().portable(true))) {
            assertThrows(IllegalArgumentException.class, () -> IoBackends.open(BackendKind.LINUX_AIO, image, 4));
            assertThrows(IllegalArgumentException.class, () -> IoBackends.open(BackendKind.IO_URING, image, 4));
        }
    }
}
