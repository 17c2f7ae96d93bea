package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.sys.PosixFile;

/**
 * The back-end contract, run against every back end on real files (O_DIRECT unless a test says
 * otherwise). The null back end takes part where the data does not matter.
 */
class IoBackendTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    static IoBackend open(BackendKind kind, Image image, int depth) {
        return IoBackends.open(kind, image, depth);
    }

    Path newFile(String name, long sizeBytes) throws IOException {
        Path path = dir.resolve(name);
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(sizeBytes);
        }
        return path;
    }

    static byte[] readFile(Path path, long offset, int length) throws IOException {
        ByteBuffer buf = ByteBuffer.allocate(length);
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            while (buf.hasRemaining() && ch.read(buf, offset + buf.position()) >= 0) {
                // keep reading
            }
        }
        return buf.array();
    }

    static void writeFile(Path path, long offset, byte[] data) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.WRITE)) {
            ByteBuffer buf = ByteBuffer.wrap(data);
            while (buf.hasRemaining()) {
                ch.write(buf, offset + buf.position());
            }
        }
    }

    static byte[] random(int length, long seed) {
        byte[] out = new byte[length];
        SplittableRandom random = new SplittableRandom(seed);
        for (int i = 0; i < length; i++) {
            out[i] = (byte) random.nextInt(1, 256);
        }
        return out;
    }

    static IoVector one(long address, int length) {
        IoVector v = new IoVector(4);
        assertEquals(0, v.add(address, length));
        return v;
    }

    static void submitAndDrain(IoBackend io, Recorder rec) {
        assertTrue(io.submit() >= 0);
        assertTrue(io.drain(rec) >= 0);
        assertEquals(0, io.inFlight());
        assertEquals(0, io.pendingSubmit());
    }

    // ------------------------------------------------------------------ data round trips

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void writeThenReadBackInBatchesOf1To1024(BackendKind kind) throws IOException {
        int blocks = 1024;
        Path path = newFile("img", (long) blocks * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, blocks);
             GuestMemory out = new GuestMemory(blocks * BLOCK);
             GuestMemory in = new GuestMemory(blocks * BLOCK)) {
            IoVector v = new IoVector(1);
            Recorder rec = new Recorder(blocks);
            long seed = 1;
            for (int batch : new int[] {1, 2, 31, 128, 1024}) {
                List<Integer> order = shuffled(blocks, seed);
                out.fillRandom(0, batch * BLOCK, seed++);
                rec.reset();
                for (int i = 0; i < batch; i++) {
                    v.clear();
                    v.add(out.address(i * BLOCK), BLOCK);
                    assertEquals(0, io.prepareWrite((long) order.get(i) * BLOCK, v, i));
                }
                assertEquals(batch, io.pendingSubmit());
                submitAndDrain(io, rec);
                rec.assertAll(0, batch, BLOCK);
                rec.reset();
                in.fill(0, batch * BLOCK, (byte) 0);
                for (int i = 0; i < batch; i++) {
                    v.clear();
                    v.add(in.address(i * BLOCK), BLOCK);
                    assertEquals(0, io.prepareRead((long) order.get(i) * BLOCK, v, i));
                }
                submitAndDrain(io, rec);
                rec.assertAll(0, batch, BLOCK);
                assertArrayEquals(out.copy(0, batch * BLOCK), in.copy(0, batch * BLOCK), "batch " + batch);
                // An independent reader sees the same bytes.
                for (int i = 0; i < batch; i += Math.max(1, batch / 8)) {
                    assertArrayEquals(out.copy(i * BLOCK, BLOCK), readFile(path, (long) order.get(i) * BLOCK, BLOCK));
                }
            }
        }
    }

    private static List<Integer> shuffled(int n, long seed) {
        List<Integer> list = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            list.add(i);
        }
        Collections.shuffle(list, new java.util.Random(seed));
        return list;
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void vectoredTransfersGatherAndScatter(BackendKind kind) throws IOException {
        Path path = newFile("img", 1 << 20);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 8);
             GuestMemory guest = new GuestMemory(1 << 20)) {
            int[] lengths = {512, 1024, 2560, 4096, 8192, 512};
            int total = 0;
            for (int length : lengths) {
                total += length;
            }
            guest.fillRandom(0, 1 << 19, 7);
            IoVector v = new IoVector(lengths.length);
            int at = 0;
            for (int length : lengths) {
                v.add(guest.address(at), length);
                at += length + BLOCK; // gaps between segments
            }
            Recorder rec = new Recorder(2);
            assertEquals(0, io.prepareWrite(3 * BLOCK, v, 0));
            submitAndDrain(io, rec);
            assertEquals(total, rec.result(0));
            byte[] expected = new byte[total];
            int e = 0;
            at = 0;
            for (int length : lengths) {
                System.arraycopy(guest.copy(at, length), 0, expected, e, length);
                e += length;
                at += length + BLOCK;
            }
            assertArrayEquals(expected, readFile(path, 3 * BLOCK, total));
            // Read it back scattered somewhere else.
            IoVector back = new IoVector(lengths.length);
            int base = 1 << 19;
            at = base;
            for (int length : lengths) {
                back.add(guest.address(at), length);
                at += length + BLOCK;
            }
            assertEquals(0, io.prepareRead(3 * BLOCK, back, 1));
            submitAndDrain(io, rec);
            assertEquals(total, rec.result(1));
            e = 0;
            at = base;
            for (int length : lengths) {
                assertArrayEquals(java.util.Arrays.copyOfRange(expected, e, e + length), guest.copy(at, length));
                e += length;
                at += length + BLOCK;
            }
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void mixedOperationsInOneBatch(BackendKind kind) throws IOException {
        Path path = newFile("img", 64 * BLOCK);
        writeFile(path, 0, random(64 * BLOCK, 3));
        byte[] before = readFile(path, 0, 64 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 16);
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            guest.fillRandom(0, BLOCK, 11);
            Recorder rec = new Recorder(8);
            assertEquals(0, io.prepareRead(0, one(guest.address(4 * BLOCK), 2 * BLOCK), 0));
            assertEquals(0, io.prepareWrite(8 * BLOCK, one(guest.address(0), BLOCK), 1));
            assertEquals(0, io.prepareFlush(2));
            assertEquals(0, io.prepareDiscard(16 * BLOCK, 4 * BLOCK, 3));
            assertEquals(0, io.prepareWriteZeroes(24 * BLOCK, 4 * BLOCK, true, 4));
            assertEquals(0, io.prepareWriteZeroes(32 * BLOCK, 4 * BLOCK, false, 5));
            assertEquals(0, io.prepareRead(40 * BLOCK, one(guest.address(6 * BLOCK), BLOCK), 6));
            assertEquals(7, io.pendingSubmit());
            submitAndDrain(io, rec);
            assertEquals(7, rec.count());
            assertEquals(2 * BLOCK, rec.result(0));
            assertEquals(BLOCK, rec.result(1));
            rec.assertAll(2, 6, 0);
            assertEquals(BLOCK, rec.result(6));
            if (kind == BackendKind.NULL) {
                assertArrayEquals(before, readFile(path, 0, 64 * BLOCK), "the null back end touches nothing");
                return;
            }
            assertArrayEquals(java.util.Arrays.copyOfRange(before, 0, 2 * BLOCK), guest.copy(4 * BLOCK, 2 * BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(before, 40 * BLOCK, 41 * BLOCK), guest.copy(6 * BLOCK, BLOCK));
            assertArrayEquals(guest.copy(0, BLOCK), readFile(path, 8 * BLOCK, BLOCK));
            byte[] zeros = new byte[4 * BLOCK];
            assertArrayEquals(zeros, readFile(path, 16 * BLOCK, 4 * BLOCK));
            assertArrayEquals(zeros, readFile(path, 24 * BLOCK, 4 * BLOCK));
            assertArrayEquals(zeros, readFile(path, 32 * BLOCK, 4 * BLOCK));
            // Neighbours untouched.
            assertArrayEquals(java.util.Arrays.copyOfRange(before, 20 * BLOCK, 24 * BLOCK), readFile(path, 20 * BLOCK, 4 * BLOCK));
            assertArrayEquals(java.util.Arrays.copyOfRange(before, 36 * BLOCK, 40 * BLOCK), readFile(path, 36 * BLOCK, 4 * BLOCK));
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void moreOperationsThanTheQueueDepthLoseNothing(BackendKind kind) throws IOException {
        int ops = 600;
        int depth = 8;
        Path path = newFile("img", 256 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, depth);
             GuestMemory guest = new GuestMemory(256 * BLOCK)) {
            guest.fillRandom(0, 256 * BLOCK, 5);
            Recorder rec = new Recorder(ops);
            IoVector v = new IoVector(1);
            int next = 0;
            int refusals = 0;
            EventFd event = io.completionEvent();
            while (rec.count() < ops) {
                while (next < ops) {
                    int block = next % 256;
                    v.clear();
                    v.add(guest.address(block * BLOCK), BLOCK);
                    int rc = next % 3 == 0 ? io.prepareRead((long) block * BLOCK, v, next)
                            : io.prepareWrite((long) block * BLOCK, v, next);
                    if (rc == -Errno.EAGAIN) {
                        refusals++;
                        break;
                    }
                    assertEquals(0, rc);
                    next++;
                }
                assertTrue(io.submit() >= 0);
                if (io.poll(rec, depth) == 0) {
                    event.read();
                    if (io.poll(rec, depth) == 0) {
                        io.awaitCompletions(1000);
                    }
                }
                assertTrue(io.inFlight() <= depth && io.freeSlots() <= depth);
            }
            assertTrue(refusals > 0, "the queue never filled");
            rec.assertAll(0, ops, BLOCK);
            assertEquals(depth, io.freeSlots());
            assertEquals(0, io.inFlight());
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void flushCompletesAndWrittenDataIsVisible(BackendKind kind) throws IOException {
        Path path = newFile("img", 16 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 4);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            guest.fillRandom(0, BLOCK, 9);
            Recorder rec = new Recorder(2);
            assertEquals(0, io.prepareWrite(5 * BLOCK, one(guest.address(0), BLOCK), 0));
            submitAndDrain(io, rec);
            assertEquals(0, io.prepareFlush(1));
            submitAndDrain(io, rec);
            assertEquals(0, rec.result(1));
            if (kind != BackendKind.NULL) {
                assertArrayEquals(guest.copy(0, BLOCK), readFile(path, 5 * BLOCK, BLOCK));
            }
        }
    }

    // ------------------------------------------------------------------ zeroing

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void discardAndWriteZeroesReadBackAsZeros(BackendKind kind) throws IOException {
        zeroingReadsZeros(kind, newFile("img", 64 * BLOCK), ImageOptions.defaults());
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void zeroingWritesZerosWhenFallocateIsNotUsed(BackendKind kind) throws IOException {
        zeroingReadsZeros(kind, newFile("img", 64 * BLOCK), ImageOptions.defaults().fallocate(false));
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void zeroingFallsBackWhereTheFilesystemRefusesZeroRange(BackendKind kind) throws IOException {
        // tmpfs punches holes but refuses FALLOC_FL_ZERO_RANGE: a real refusal to fall back from.
        Path shm = Path.of("/dev/shm");
        assumeTrue(Files.isDirectory(shm) && Files.isWritable(shm), "no writable /dev/shm");
        Path path = Files.createTempFile(shm, "vblk-aio-test", ".img");
        try {
            try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
                file.setLength(64 * BLOCK);
            }
            zeroingReadsZeros(kind, path, ImageOptions.defaults().direct(false));
        } finally {
            Files.deleteIfExists(path);
        }
    }

    private void zeroingReadsZeros(BackendKind kind, Path path, ImageOptions options) throws IOException {
        byte[] data = random(64 * BLOCK, 13);
        writeFile(path, 0, data);
        boolean holes;
        try (Image image = Image.open(path, options);
             IoBackend io = open(kind, image, 8)) {
            Recorder rec = new Recorder(8);
            assertEquals(0, io.prepareDiscard(4 * BLOCK, 8 * BLOCK, 0));
            assertEquals(0, io.prepareWriteZeroes(20 * BLOCK, 8 * BLOCK, false, 1));
            assertEquals(0, io.prepareWriteZeroes(36 * BLOCK, 8 * BLOCK, true, 2));
            assertEquals(0, io.prepareDiscard(50 * BLOCK, 0, 3));
            submitAndDrain(io, rec);
            rec.assertAll(0, 4, 0);
            // Twice: the second round runs after any refusal was learned.
            assertEquals(0, io.prepareWriteZeroes(48 * BLOCK, 2 * BLOCK, false, 4));
            assertEquals(0, io.prepareDiscard(52 * BLOCK, 2 * BLOCK, 5));
            submitAndDrain(io, rec);
            rec.assertAll(4, 6, 0);
            holes = image.discardMode() != 0;
        }
        byte[] expected = data.clone();
        // DISCARD is advisory: a punched hole reads zeros, where none can be punched nothing changes.
        int[][] zeroed = holes ? new int[][] {{4, 8}, {20, 8}, {36, 8}, {48, 2}, {52, 2}} : new int[][] {{20, 8}, {36, 8}, {48, 2}};
        for (int[] range : zeroed) {
            java.util.Arrays.fill(expected, range[0] * BLOCK, (range[0] + range[1]) * BLOCK, (byte) 0);
        }
        assertArrayEquals(expected, readFile(path, 0, 64 * BLOCK));
    }

    // ------------------------------------------------------------------ alignment

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void unalignedGuestBuffersAreBouncedUnderODirect(BackendKind kind) throws IOException {
        Path path = newFile("img", 64 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 8);
             GuestMemory guest = new GuestMemory(16 * BLOCK)) {
            assertTrue(image.direct() && image.memoryAlignment() > 1, image.toString());
            guest.fillRandom(0, 4 * BLOCK + 1, 17);
            Recorder rec = new Recorder(8);
            // One byte off the alignment, and segment lengths that are not block multiples.
            IoVector odd = new IoVector(3);
            odd.add(guest.address(1), 1000);
            odd.add(guest.address(1 + 1000), 3096);
            odd.add(guest.address(1 + 4096), 4096);
            assertEquals(0, io.prepareWrite(2 * BLOCK, odd, 0));
            submitAndDrain(io, rec);
            assertEquals(2 * BLOCK, rec.result(0));
            assertArrayEquals(guest.copy(1, 2 * BLOCK), readFile(path, 2 * BLOCK, 2 * BLOCK));
            IoVector back = new IoVector(2);
            back.add(guest.address(8 * BLOCK + 3), 5000);
            back.add(guest.address(10 * BLOCK + 7), 3192);
            assertEquals(0, io.prepareRead(2 * BLOCK, back, 1));
            submitAndDrain(io, rec);
            assertEquals(2 * BLOCK, rec.result(1));
            byte[] expected = guest.copy(1, 2 * BLOCK);
            assertArrayEquals(java.util.Arrays.copyOfRange(expected, 0, 5000), guest.copy(8 * BLOCK + 3, 5000));
            assertArrayEquals(java.util.Arrays.copyOfRange(expected, 5000, 8192), guest.copy(10 * BLOCK + 7, 3192));
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void misalignedFileOffsetsAreRefusedUnderODirect(BackendKind kind) throws IOException {
        Path path = newFile("img", 16 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 4);
             GuestMemory guest = new GuestMemory(2 * BLOCK)) {
            int align = image.offsetAlignment();
            assertEquals(-Errno.EINVAL, io.prepareRead(align / 2, one(guest.address(0), BLOCK), 0));
            assertEquals(-Errno.EINVAL, io.prepareRead(0, one(guest.address(0), align / 2), 1));
            assertEquals(4, io.freeSlots());
            // The queue still works.
            Recorder rec = new Recorder(4);
            assertEquals(0, io.prepareRead(0, one(guest.address(0), BLOCK), 2));
            submitAndDrain(io, rec);
            assertEquals(BLOCK, rec.result(2));
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void bufferedImagesTakeAnyAlignment(BackendKind kind) throws IOException {
        Path path = newFile("img", 16 * BLOCK);
        byte[] data = random(16 * BLOCK, 19);
        writeFile(path, 0, data);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(false));
             IoBackend io = open(kind, image, 4);
             GuestMemory guest = new GuestMemory(2 * BLOCK)) {
            assertEquals(1, image.offsetAlignment());
            Recorder rec = new Recorder(4);
            assertEquals(0, io.prepareRead(1001, one(guest.address(3), 777), 0));
            submitAndDrain(io, rec);
            assertEquals(777, rec.result(0));
            assertArrayEquals(java.util.Arrays.copyOfRange(data, 1001, 1778), guest.copy(3, 777));
        }
    }

    // ------------------------------------------------------------------ refusals and errors

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void readOnlyImagesRefuseEveryChange(BackendKind kind) throws IOException {
        Path path = newFile("img", 16 * BLOCK);
        byte[] data = random(16 * BLOCK, 23);
        writeFile(path, 0, data);
        try (Image image = Image.open(path, ImageOptions.defaults().readOnly(true));
             IoBackend io = open(kind, image, 4);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            guest.fill(0, BLOCK, (byte) 0x55);
            assertEquals(-Errno.EROFS, io.prepareWrite(0, one(guest.address(0), BLOCK), 0));
            assertEquals(-Errno.EROFS, io.prepareDiscard(0, BLOCK, 1));
            assertEquals(-Errno.EROFS, io.prepareWriteZeroes(0, BLOCK, true, 2));
            assertEquals(-Errno.EROFS, io.prepareWriteZeroes(0, BLOCK, false, 3));
            assertEquals(0, io.pendingSubmit());
            Recorder rec = new Recorder(8);
            assertEquals(0, io.prepareRead(BLOCK, one(guest.address(0), BLOCK), 4));
            assertEquals(0, io.prepareFlush(5));
            submitAndDrain(io, rec);
            assertEquals(BLOCK, rec.result(4));
            assertEquals(0, rec.result(5));
            rec.assertNone(0, 4);
            if (kind != BackendKind.NULL) {
                assertArrayEquals(java.util.Arrays.copyOfRange(data, BLOCK, 2 * BLOCK), guest.copy(0, BLOCK));
            }
        }
        assertArrayEquals(data, readFile(path, 0, 16 * BLOCK));
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void rangesOutsideTheImageFailOnlyThatOperation(BackendKind kind) throws IOException {
        long size = 16 * BLOCK;
        Path path = newFile("img", size);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 4);
             GuestMemory guest = new GuestMemory(2 * BLOCK)) {
            IoVector v = one(guest.address(0), BLOCK);
            assertEquals(-Errno.EINVAL, io.prepareRead(size, v, 0));
            assertEquals(-Errno.EINVAL, io.prepareRead(size - BLOCK / 2, v, 0));
            assertEquals(-Errno.EINVAL, io.prepareRead(-BLOCK, v, 0));
            assertEquals(-Errno.EINVAL, io.prepareRead(Long.MAX_VALUE - BLOCK + 1, v, 0));
            assertEquals(-Errno.EINVAL, io.prepareWrite(size, v, 0));
            assertEquals(-Errno.EINVAL, io.prepareDiscard(size - BLOCK, 2 * BLOCK, 0));
            assertEquals(-Errno.EINVAL, io.prepareWriteZeroes(0, Long.MAX_VALUE, true, 0));
            IoVector tooMany = new IoVector(BackendOptions.DEFAULT_MAX_SEGMENTS + 1);
            for (int i = 0; i <= BackendOptions.DEFAULT_MAX_SEGMENTS; i++) {
                tooMany.add(guest.address(0), 0);
            }
            assertEquals(-Errno.EINVAL, io.prepareRead(0, tooMany, 0));
            assertEquals(4, io.freeSlots());
            assertEquals(0, io.pendingSubmit());
            Recorder rec = new Recorder(2);
            assertEquals(0, io.prepareRead(size - BLOCK, v, 1));
            submitAndDrain(io, rec);
            assertEquals(BLOCK, rec.result(1));
            rec.assertNone(0, 1);
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void aClosedDescriptorFailsTheOperationAndNothingElse(BackendKind kind) throws IOException {
        Path path = newFile("img", 16 * BLOCK);
        Image image = Image.open(path, ImageOptions.defaults());
        try (IoBackend io = open(kind, image, 4);
             GuestMemory guest = new GuestMemory(2 * BLOCK)) {
            Recorder rec = new Recorder(8);
            assertEquals(0, io.prepareRead(0, one(guest.address(0), BLOCK), 0));
            submitAndDrain(io, rec);
            assertEquals(BLOCK, rec.result(0));
            int closedFd = image.fd();
            image.close();
            // The number is free now, and the next open in this JVM (any thread) takes it. Take it
            // at once with a directory, which no read can succeed on: an unrelated file or pipe
            // reusing it would make the reads succeed or block, which says nothing about the back end.
            try (PosixFile placeholder = PosixFile.open(dir, true, false)) {
                assumeTrue(placeholder.fd() == closedFd, "another thread reused descriptor " + closedFd + " first");
                assertEquals(0, io.prepareRead(0, one(guest.address(0), BLOCK), 1));
                assertEquals(0, io.prepareRead(BLOCK, one(guest.address(BLOCK), BLOCK), 2));
                submitAndDrain(io, rec);
            }
            if (kind == BackendKind.IO_URING) {
                // The image is the ring's registered file: the ring holds its own reference, so
                // its operations still reach the image, never what reuses the number.
                assertEquals(BLOCK, rec.result(1), "read through the registered file");
                assertEquals(BLOCK, rec.result(2), "read through the registered file");
            } else {
                assertTrue(rec.result(1) < 0, "read on a closed descriptor gave " + rec.result(1));
                assertTrue(rec.result(2) < 0, "read on a closed descriptor gave " + rec.result(2));
            }
            assertEquals(4, io.freeSlots());
        } finally {
            image.close();
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void anExhaustedQueueRefusesUntilSlotsAreReaped(BackendKind kind) throws IOException {
        Path path = newFile("img", 16 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 4);
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            Recorder rec = new Recorder(8);
            for (int i = 0; i < 4; i++) {
                assertEquals(0, io.prepareRead((long) i * BLOCK, one(guest.address(i * BLOCK), BLOCK), i));
            }
            assertEquals(0, io.freeSlots());
            assertEquals(-Errno.EAGAIN, io.prepareRead(0, one(guest.address(0), BLOCK), 4));
            assertEquals(-Errno.EAGAIN, io.prepareFlush(4));
            assertEquals(-Errno.EAGAIN, io.prepareDiscard(0, BLOCK, 4));
            submitAndDrain(io, rec);
            rec.assertAll(0, 4, BLOCK);
            rec.assertNone(4, 5);
            assertEquals(4, io.freeSlots());
            assertEquals(0, io.prepareRead(0, one(guest.address(0), BLOCK), 4));
            submitAndDrain(io, rec);
            assertEquals(BLOCK, rec.result(4));
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void aQueueOfDepthOneWorks(BackendKind kind) throws IOException {
        Path path = newFile("img", 16 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, 1);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            Recorder rec = new Recorder(16);
            for (int i = 0; i < 16; i++) {
                assertEquals(0, io.prepareRead((long) i * BLOCK, one(guest.address(0), BLOCK), i));
                assertEquals(-Errno.EAGAIN, io.prepareFlush(99));
                submitAndDrain(io, rec);
            }
            rec.assertAll(0, 16, BLOCK);
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void closingWithOperationsInFlightWaitsForThem(BackendKind kind) throws IOException {
        int ops = 256;
        Path path = newFile("img", (long) ops * BLOCK);
        GuestMemory guest = new GuestMemory(ops * BLOCK);
        Image image = Image.open(path, ImageOptions.defaults());
        IoBackend io = open(kind, image, ops);
        guest.fillRandom(0, ops * BLOCK, 29);
        IoVector v = new IoVector(1);
        for (int i = 0; i < ops; i++) {
            v.clear();
            v.add(guest.address(i * BLOCK), BLOCK);
            assertEquals(0, io.prepareWrite((long) i * BLOCK, v, i));
        }
        assertEquals(ops, io.submit());
        io.close();
        assertEquals(0, io.inFlight());
        assertEquals(-Errno.EBADF, io.prepareRead(0, v, 0));
        io.close();
        image.close();
        if (kind != BackendKind.NULL) {
            assertArrayEquals(guest.copy(0, ops * BLOCK), readFile(path, 0, ops * BLOCK));
        }
        guest.close();
    }

    // ------------------------------------------------------------------ threads

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void aDedicatedReaperThreadSeesEveryCompletionOnce(BackendKind kind) throws Exception {
        int ops = 4000;
        int depth = 32;
        Path path = newFile("img", 64 * BLOCK);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = open(kind, image, depth);
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            Recorder rec = new Recorder(ops);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread reaper = new Thread(() -> {
                try {
                    EventFd event = io.completionEvent();
                    while (rec.count() < ops) {
                        if (io.poll(rec, depth) == 0) {
                            event.read();
                            if (io.poll(rec, depth) == 0) {
                                io.awaitCompletions(100);
                            }
                        }
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            }, "reaper");
            reaper.start();
            IoVector v = new IoVector(1);
            for (int next = 0; next < ops && failure.get() == null; ) {
                v.clear();
                v.add(guest.address((next % depth) * BLOCK), BLOCK);
                int rc = io.prepareRead((long) (next % 64) * BLOCK, v, next);
                if (rc == 0) {
                    next++;
                    if (next % 7 == 0) {
                        io.submit();
                    }
                } else {
                    assertEquals(-Errno.EAGAIN, rc);
                    io.submit();
                    Thread.onSpinWait();
                }
            }
            io.submit();
            reaper.join(30_000);
            if (failure.get() != null) {
                throw new AssertionError(failure.get());
            }
            rec.assertAll(0, ops, BLOCK);
            assertEquals(depth, io.freeSlots());
        }
    }
}
