package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;


import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * io_uring specifics: a kernel that takes only part of the SQ per enter loses nothing; close
 * returns when its count says operations are in flight that the kernel does not owe.
 */
class IoUringBackendTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @Test
    void partialSubmissionKeepsTheRestInTheRing() throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(64L * BLOCK);
        }
        int depth = 64;
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth));
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            io.submitLimit(3);
            Recorder rec = new Recorder(depth);
            IoVector v = new IoVector(1);
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, i % 5 == 4 ? io.prepareFlush(i) : io.prepareWrite((long) i * BLOCK, v, i));
            }
            int submits = 0;
            while (io.pendingSubmit() > 0) {
                int before = io.pendingSubmit();
                int taken = io.submit();
                assertTrue(taken > 0 && taken <= 3, "took " + taken);
                assertEquals(before - taken, io.pendingSubmit());
                submits++;
            }
            assertEquals((depth + 2) / 3, submits);
            io.drain(rec);
            for (int i = 0; i < depth; i++) {
                assertEquals(i % 5 == 4 ? 0 : BLOCK, rec.result(i), "op " + i);
            }
        }
    }
}
