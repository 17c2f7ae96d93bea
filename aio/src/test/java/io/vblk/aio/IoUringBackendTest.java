package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;


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

    /**
     * The image is the ring's registered file 0: every slot's SQE names index 0 with
     * IOSQE_FIXED_FILE (no per-operation descriptor lookup), and O_DIRECT writes and reads
     * through it reach the image itself: what is written through the ring is in the file, and
     * what the file holds is read back through the ring.
     */
    @Test
    void operationsNameTheImageAsRegisteredFileZero() throws IOException {
        int blocks = 32;
        Path path = dir.resolve("img");
        byte[] content = new byte[blocks * BLOCK];
        new Random(11).nextBytes(content);
        Files.write(path, content);
        int depth = 16;
        byte[] written;
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(depth));
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            assertTrue(io.registeredFile(), "Linux 5.1+ registers files; this kernel refused");
            for (int slot = 0; slot < depth; slot++) {
                assertEquals(IoUringDescriptor.SQE_FIXED_FILE, io.sqeFlags(slot) & IoUringDescriptor.SQE_FIXED_FILE, "slot " + slot);
                assertEquals(0, io.sqeFd(slot), "slot " + slot);
            }
            Recorder rec = new Recorder(blocks * 2);
            IoVector v = new IoVector(1);
            // Reads of blocks 0..15 into guest memory.
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, io.prepareRead((long) i * BLOCK, v, i));
            }
            io.submit();
            io.drain(rec);
            rec.assertAll(0, depth, BLOCK);
            for (int i = 0; i < depth; i++) {
                assertArrayEquals(java.util.Arrays.copyOfRange(content, i * BLOCK, (i + 1) * BLOCK), guest.copy(i * BLOCK, BLOCK),
                        "block " + i);
            }
            // Writes of new data over blocks 16..31.
            guest.fillRandom(0, depth * BLOCK, 7);
            written = guest.copy(0, depth * BLOCK);
            for (int i = 0; i < depth; i++) {
                v.clear();
                v.add(guest.address(i * BLOCK), BLOCK);
                assertEquals(0, io.prepareWrite((long) (depth + i) * BLOCK, v, depth + i));
            }
            io.submit();
            io.drain(rec);
            rec.assertAll(depth, 2 * depth, BLOCK);
        }
        byte[] after = Files.readAllBytes(path);
        assertEquals(blocks * BLOCK, after.length);
        assertArrayEquals(written, java.util.Arrays.copyOfRange(after, depth * BLOCK, blocks * BLOCK));
        assertArrayEquals(java.util.Arrays.copyOfRange(content, 0, depth * BLOCK), java.util.Arrays.copyOfRange(after, 0, depth * BLOCK));
    }

    /**
     * A transfer of one segment goes to the kernel as IORING_OP_READ/WRITE of that buffer (no
     * iovec); one of several segments as READV/WRITEV, and a bounced one (misaligned for
     * O_DIRECT) as a plain read of its bounce buffer. All move the right bytes.
     */
    @Test
    void oneSegmentIsAPlainReadOrWriteAndSeveralAreVectored() throws IOException {
        int blocks = 8;
        Path path = dir.resolve("img");
        byte[] content = new byte[blocks * BLOCK];
        new Random(5).nextBytes(content);
        Files.write(path, content);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(4));
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            Recorder rec = new Recorder(8);
            IoVector one = new IoVector(2);
            one.add(guest.address(0), BLOCK);
            assertEquals(0, io.prepareRead(BLOCK, one, 0));
            IoVector two = new IoVector(2);
            two.add(guest.address(2 * BLOCK), BLOCK);
            two.add(guest.address(4 * BLOCK), BLOCK);
            assertEquals(0, io.prepareRead(2L * BLOCK, two, 1));
            // Misaligned guest buffer: bounced through one aligned buffer, itself one segment.
            IoVector odd = new IoVector(2);
            odd.add(guest.address(6 * BLOCK) + 8, BLOCK);
            assertEquals(0, io.prepareRead(5L * BLOCK, odd, 2));
            io.submit();
            assertEquals(IoUringDescriptor.OP_READ, io.sqeOpcode(0));
            assertEquals(IoUringDescriptor.OP_READV, io.sqeOpcode(1));
            assertEquals(IoUringDescriptor.OP_READ, io.sqeOpcode(2));
            io.drain(rec);
            assertEquals(BLOCK, rec.result(0));
            assertEquals(2 * BLOCK, rec.result(1));
            assertEquals(BLOCK, rec.result(2));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, BLOCK, 2 * BLOCK), guest.copy(0, BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 2 * BLOCK, 3 * BLOCK), guest.copy(2 * BLOCK, BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 3 * BLOCK, 4 * BLOCK), guest.copy(4 * BLOCK, BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 5 * BLOCK, 6 * BLOCK), guest.copy(6 * BLOCK + 8, BLOCK));
            // A one-segment write lands in the file.
            guest.fillRandom(0, BLOCK, 9);
            byte[] written = guest.copy(0, BLOCK);
            assertEquals(0, io.prepareWrite(7L * BLOCK, one, 3));
            io.submit();
            assertEquals(IoUringDescriptor.OP_WRITE, io.sqeOpcode(3), "the fourth slot, first free (a FIFO of slots)");
            io.drain(rec);
            assertEquals(BLOCK, rec.result(3));
            assertArrayEquals(written, java.util.Arrays.copyOfRange(Files.readAllBytes(path), 7 * BLOCK, 8 * BLOCK));
        }
    }
}
