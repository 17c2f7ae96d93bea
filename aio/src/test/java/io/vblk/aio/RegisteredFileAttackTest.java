package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.RandomAccessFile;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * io_uring names the image as the ring's registered file 0 (IoUringBackend, IOSQE_FIXED_FILE):
 * the ring holds its own reference to the file it was given at creation. What a resize does
 * to that: the ring sees the same file, so an image grown under a running back end is written
 * past its old end through the ring, and one shrunk refuses (the image's bounds, checked before
 * the ring) what lies past the new end. Holds; real io_uring on a real file.
 */
class RegisteredFileAttackTest {
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @Test
    void aResizedImageIsTheFileTheRingWritesAndItsBoundsHold() throws Exception {
        Path path = dir.resolve("img");
        try (RandomAccessFile f = new RandomAccessFile(path.toFile(), "rw")) {
            f.setLength(16L * BLOCK);
        }
        try (Image image = Image.open(path, ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(4 * BLOCK)) {
            IoBackend io = IoBackends.open(BackendKind.IO_URING, image, 8);
            try {
                assertTrue(((IoUringBackend) io).registeredFile(), "this kernel registers the file");
                image.resize(32L * BLOCK);
                NativeBuffer data = new NativeBuffer(BLOCK, BLOCK);
                for (int i = 0; i < BLOCK; i++) {
                    data.buffer().putByte(i, (byte) 0x3c);
                }
                IoVector v = new IoVector(1);
                v.add(data.address(), BLOCK);
                assertEquals(0, io.prepareWrite(24L * BLOCK, v, 0), "past the old end, within the new one");
                Recorder rec = new Recorder(8);
                io.drain(rec);
                assertEquals(BLOCK, rec.result(0));
                try (RandomAccessFile f = new RandomAccessFile(path.toFile(), "r")) {
                    f.seek(24L * BLOCK);
                    assertEquals(0x3c, f.read(), "the ring wrote the file the image names");
                }
                image.resize(8L * BLOCK);
                assertEquals(-Errno.EINVAL, io.prepareRead(24L * BLOCK, v, 1), "past the new end: refused before the ring");
                IoVector g = new IoVector(1);
                g.add(guest.address(0), BLOCK);
                assertEquals(0, io.prepareRead(4L * BLOCK, g, 2));
                Recorder again = new Recorder(8);
                io.drain(again);
                assertEquals(BLOCK, again.result(2));
            } finally {
                io.close();
            }
        }
    }
}
