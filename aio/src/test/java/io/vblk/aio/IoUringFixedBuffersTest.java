package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.sys.Errno;
import io.vblk.sys.Mapping;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;

/**
 * io_uring fixed buffers on a real ring, real files and real memfd mappings (what a vhost-user
 * frontend shares as guest memory): one-segment transfers inside a registered buffer go as
 * READ_FIXED/WRITE_FIXED and move the right bytes; everything else goes as before and is still
 * right. The back ends here have depth 1, so each operation's SQE is slot 0's.
 */
class IoUringFixedBuffersTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    /** A MAP_SHARED memfd mapping, as vhost-user guest memory. */
    static final class Shared implements AutoCloseable {
        final int fd;
        final Mapping mapping;
        final UnsafeBuffer bytes;

        Shared(long sizeBytes) {
            fd = Memfd.create("fixed-test", sizeBytes);
            mapping = Mapping.map(fd, 0, sizeBytes, false, false);
            bytes = new UnsafeBuffer(mapping.address(), (int) Math.min(sizeBytes, Integer.MAX_VALUE));
        }

        long address(long offset) {
            return mapping.address() + offset;
        }

        @Override
        public void close() {
            mapping.close();
            Native.libc().close(fd);
        }
    }

    private Path image(int blocks, long seed) throws IOException {
        Path path = dir.resolve("img");
        byte[] content = new byte[blocks * BLOCK];
        new Random(seed).nextBytes(content);
        Files.write(path, content);
        return path;
    }

    /** One operation through slot 0: returns the opcode it was prepared with; asserts its result. */
    private static int transfer(IoUringBackend io, boolean write, long fileOffset, long address, int length) {
        IoVector v = new IoVector(1);
        v.add(address, length);
        assertEquals(0, write ? io.prepareWrite(fileOffset, v, 1) : io.prepareRead(fileOffset, v, 1));
        int opcode = io.sqeOpcode(0);
        assertEquals(1, io.submit());
        Recorder rec = new Recorder(2);
        io.drain(rec);
        assertEquals(length, rec.result(1), "result of " + (write ? "write" : "read") + " at " + fileOffset);
        return opcode;
    }

    private static byte[] fileBytes(Path path, long offset, int length) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(path.toFile(), "r")) {
            byte[] out = new byte[length];
            f.seek(offset);
            f.readFully(out);
            return out;
        }
    }

    private static byte[] memory(long address, int length) {
        byte[] out = new byte[length];
        new UnsafeBuffer(address, length).getBytes(0, out);
        return out;
    }

    /**
     * A memfd mapping registers on this kernel; reads and writes inside it go as READ_FIXED and
     * WRITE_FIXED and land the right bytes at the right offsets, with O_DIRECT and buffered;
     * the last block of the region too.
     */
    @ParameterizedTest(name = "direct={0}")
    @ValueSource(booleans = {true, false})
    void fixedTransfersMoveTheRightBytes(boolean direct) throws IOException {
        int blocks = 64;
        Path path = image(blocks, 3);
        byte[] content = Files.readAllBytes(path);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(direct));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(1));
             Shared guest = new Shared(16L * BLOCK)) {
            assertEquals(1, io.registerBuffers(new long[] {guest.address(0)}, new long[] {16L * BLOCK}),
                    "memfd registration: " + io.bufferRegistration());
            assertEquals(1, io.fixedBufferCount());
            Random random = new Random(9);
            for (int i = 0; i < 40; i++) {
                int block = random.nextInt(blocks);
                int slotInGuest = i == 0 ? 15 : random.nextInt(16); // the region's last block first
                int op = transfer(io, false, (long) block * BLOCK, guest.address((long) slotInGuest * BLOCK), BLOCK);
                assertEquals(IoUringDescriptor.OP_READ_FIXED, op);
                assertArrayEquals(Arrays.copyOfRange(content, block * BLOCK, (block + 1) * BLOCK),
                        memory(guest.address((long) slotInGuest * BLOCK), BLOCK), "read of block " + block + " into " + slotInGuest);
            }
            for (int i = 0; i < 40; i++) {
                int block = random.nextInt(blocks);
                int slotInGuest = i == 0 ? 15 : random.nextInt(16);
                byte[] data = new byte[BLOCK];
                random.nextBytes(data);
                guest.bytes.putBytes(slotInGuest * BLOCK, data);
                int op = transfer(io, true, (long) block * BLOCK, guest.address((long) slotInGuest * BLOCK), BLOCK);
                assertEquals(IoUringDescriptor.OP_WRITE_FIXED, op);
                assertArrayEquals(data, fileBytes(path, (long) block * BLOCK, BLOCK), "write of block " + block);
            }
            // Several blocks in one segment, ending at the region's last byte.
            int op = transfer(io, false, 0, guest.address(8L * BLOCK), 8 * BLOCK);
            assertEquals(IoUringDescriptor.OP_READ_FIXED, op);
            assertArrayEquals(fileBytes(path, 0, 8 * BLOCK), memory(guest.address(8L * BLOCK), 8 * BLOCK));
        }
    }

    /**
     * Two registered pieces that touch: a transfer straddling them, or in memory registered
     * nowhere, goes unregistered (READ/WRITE) and is still right; one inside the second piece
     * names buffer 1.
     */
    @Test
    void transfersOutsideOneBufferGoUnregistered() throws IOException {
        Path path = image(16, 4);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(1));
             Shared guest = new Shared(8L * BLOCK);
             Shared other = new Shared(4L * BLOCK)) {
            // Given out of order: the table sorts them, and the index is the sorted position.
            assertEquals(2, io.registerBuffers(new long[] {guest.address(4L * BLOCK), guest.address(0)},
                    new long[] {4L * BLOCK, 4L * BLOCK}), io.bufferRegistration());
            assertEquals(IoUringDescriptor.OP_READ, transfer(io, false, 0, guest.address(3L * BLOCK), 2 * BLOCK));
            assertArrayEquals(fileBytes(path, 0, 2 * BLOCK), memory(guest.address(3L * BLOCK), 2 * BLOCK));
            assertEquals(IoUringDescriptor.OP_READ, transfer(io, false, BLOCK, other.address(0), BLOCK));
            assertArrayEquals(fileBytes(path, BLOCK, BLOCK), memory(other.address(0), BLOCK));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, transfer(io, false, 2L * BLOCK, guest.address(7L * BLOCK), BLOCK));
            assertEquals(1, io.sqeBufIndex(0));
            assertArrayEquals(fileBytes(path, 2L * BLOCK, BLOCK), memory(guest.address(7L * BLOCK), BLOCK));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, transfer(io, false, 3L * BLOCK, guest.address(0), BLOCK));
            assertEquals(0, io.sqeBufIndex(0));
            other.bytes.setMemory(0, BLOCK, (byte) 0x5a);
            assertEquals(IoUringDescriptor.OP_WRITE, transfer(io, true, 4L * BLOCK, other.address(0), BLOCK));
            byte[] expected = new byte[BLOCK];
            Arrays.fill(expected, (byte) 0x5a);
            assertArrayEquals(expected, fileBytes(path, 4L * BLOCK, BLOCK));
            // Several segments stay vectored even inside a buffer.
            IoVector two = new IoVector(2);
            two.add(guest.address(0), BLOCK);
            two.add(guest.address(BLOCK), BLOCK);
            assertEquals(0, io.prepareRead(0, two, 1));
            assertEquals(IoUringDescriptor.OP_READV, io.sqeOpcode(0));
            io.submit();
            Recorder rec = new Recorder(2);
            io.drain(rec);
            assertEquals(2 * BLOCK, rec.result(1));
        }
    }

    /**
     * Regression (review of 2026-12-05): a slot's SQE is reused, and FSYNC and FALLOCATE refuse a
     * non-zero buf_index with EINVAL. A fixed read of buffer 1 left its index in slot 0's SQE, so
     * the next flush, discard or write-zeroes through that slot failed: with QEMU's two-region
     * table most of a guest's flushes did. Every operation through slot 0 here follows a fixed
     * transfer of buffer 1.
     */
    @Test
    void flushAndZeroingAfterAFixedTransferOfBufferOneSucceed() throws IOException {
        Path path = image(16, 5);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(false));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(1));
             Shared a = new Shared(4L * BLOCK);
             Shared b = new Shared(4L * BLOCK)) {
            assertEquals(2, io.registerBuffers(new long[] {a.address(0), b.address(0)}, new long[] {4L * BLOCK, 4L * BLOCK}),
                    io.bufferRegistration());
            long second = Math.max(a.address(0), b.address(0));
            for (int op = 0; op < 4; op++) {
                assertEquals(IoUringDescriptor.OP_READ_FIXED, transfer(io, false, 0, second, BLOCK));
                assertEquals(1, io.sqeBufIndex(0));
                int rc;
                switch (op) {
                    case 0: rc = io.prepareFlush(1); break;
                    case 1: rc = io.prepareDiscard(BLOCK, BLOCK, 1); break;
                    case 2: rc = io.prepareWriteZeroes(2L * BLOCK, BLOCK, false, 1); break;
                    default:
                        IoVector two = new IoVector(2);
                        two.add(second, BLOCK);
                        two.add(second + BLOCK, BLOCK);
                        rc = io.prepareRead(0, two, 1);
                        break;
                }
                assertEquals(0, rc);
                int index = io.sqeBufIndex(0);
                assertEquals(1, io.submit());
                Recorder rec = new Recorder(2);
                io.drain(rec);
                assertEquals(op == 3 ? 2 * BLOCK : 0, rec.result(1), "operation " + op);
                assertEquals(0, index, "operation " + op);
            }
            assertArrayEquals(new byte[BLOCK], fileBytes(path, 2L * BLOCK, BLOCK));
        }
    }

    /**
     * Re-registration: I/O on table A, then B replaces it (A's range now goes unregistered, B's
     * fixed), then unregistering leaves everything unregistered; all of it moves the right bytes.
     */
    @Test
    void reRegistrationMovesTransfersToTheNewTable() throws IOException {
        Path path = image(16, 5);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(1));
             Shared a = new Shared(4L * BLOCK);
             Shared b = new Shared(4L * BLOCK)) {
            assertEquals(1, io.registerBuffers(new long[] {a.address(0)}, new long[] {4L * BLOCK}));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, transfer(io, false, 0, a.address(0), BLOCK));
            assertEquals(IoUringDescriptor.OP_READ, transfer(io, false, BLOCK, b.address(0), BLOCK));
            assertEquals(1, io.registerBuffers(new long[] {b.address(0)}, new long[] {4L * BLOCK}));
            assertEquals(IoUringDescriptor.OP_READ, transfer(io, false, 2L * BLOCK, a.address(BLOCK), BLOCK));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, transfer(io, false, 3L * BLOCK, b.address(BLOCK), BLOCK));
            assertArrayEquals(fileBytes(path, 0, BLOCK), memory(a.address(0), BLOCK));
            assertArrayEquals(fileBytes(path, BLOCK, BLOCK), memory(b.address(0), BLOCK));
            assertArrayEquals(fileBytes(path, 2L * BLOCK, BLOCK), memory(a.address(BLOCK), BLOCK));
            assertArrayEquals(fileBytes(path, 3L * BLOCK, BLOCK), memory(b.address(BLOCK), BLOCK));
            io.unregisterBuffers();
            assertEquals(0, io.fixedBufferCount());
            b.bytes.setMemory(0, BLOCK, (byte) 7);
            assertEquals(IoUringDescriptor.OP_WRITE, transfer(io, true, 5L * BLOCK, b.address(0), BLOCK));
            byte[] sevens = new byte[BLOCK];
            Arrays.fill(sevens, (byte) 7);
            assertArrayEquals(sevens, fileBytes(path, 5L * BLOCK, BLOCK));
        }
    }

    /**
     * A range the kernel refuses to pin for the long term (a MAP_SHARED mapping of a file on a
     * disk filesystem, whose pages need dirty tracking: EFAULT since Linux 6.5) leaves nothing
     * registered, says why, and transfers from it go unregistered and right.
     */
    @Test
    void aRefusedRegistrationFallsBackToUnregisteredTransfers() throws IOException {
        Path path = image(16, 6);
        Path backing = dir.resolve("guest-ram");
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
            f.setLength(4L * BLOCK);
        }
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(1));
             PosixFileMapping fileRam = new PosixFileMapping(backing, 4L * BLOCK)) {
            int rc = io.registerBuffers(new long[] {fileRam.mapping.address()}, new long[] {4L * BLOCK});
            assertTrue(rc < 0, "the kernel pinned a MAP_SHARED ext4 file mapping: " + rc);
            assertEquals(0, io.fixedBufferCount());
            assertTrue(io.bufferRegistration().startsWith("refused by the kernel"), io.bufferRegistration());
            assertEquals(IoUringDescriptor.OP_READ, transfer(io, false, BLOCK, fileRam.mapping.address(), BLOCK));
            assertArrayEquals(fileBytes(path, BLOCK, BLOCK), memory(fileRam.mapping.address(), BLOCK));
        }
    }

    /**
     * A fixed read prepared and not yet submitted when the table changes becomes a READV of its
     * iovec (its buffer index would name another range in the new table) and still reads right;
     * a bad range leaves nothing registered.
     */
    @Test
    void aQueuedFixedTransferSurvivesReRegistration() throws IOException {
        Path path = image(16, 10);
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(1));
             Shared guest = new Shared(4L * BLOCK);
             Shared other = new Shared(4L * BLOCK)) {
            assertEquals(1, io.registerBuffers(new long[] {guest.address(0)}, new long[] {4L * BLOCK}));
            IoVector v = new IoVector(1);
            v.add(guest.address(2L * BLOCK), BLOCK);
            assertEquals(0, io.prepareRead(5L * BLOCK, v, 1));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, io.sqeOpcode(0));
            // The new table puts another range at index 0.
            assertEquals(1, io.registerBuffers(new long[] {other.address(0)}, new long[] {4L * BLOCK}));
            assertEquals(IoUringDescriptor.OP_READV, io.sqeOpcode(0));
            assertEquals(1, io.submit());
            Recorder rec = new Recorder(2);
            io.drain(rec);
            assertEquals(BLOCK, rec.result(1));
            assertArrayEquals(fileBytes(path, 5L * BLOCK, BLOCK), memory(guest.address(2L * BLOCK), BLOCK));
            assertArrayEquals(new byte[BLOCK], memory(other.address(0), BLOCK));
            assertThrows(IllegalArgumentException.class, () -> io.registerBuffers(new long[] {guest.address(0)}, new long[] {-1}));
            assertEquals(0, io.fixedBufferCount());
        }
    }

    /** A MAP_SHARED mapping of a regular file. */
    static final class PosixFileMapping implements AutoCloseable {
        final Mapping mapping;

        PosixFileMapping(Path path, long length) {
            int fd = io.vblk.sys.Native.libc().open(path.toString(), io.vblk.sys.Linux.O_RDWR | io.vblk.sys.Linux.O_CLOEXEC, 0);
            assertTrue(fd >= 0);
            try {
                mapping = Mapping.map(fd, 0, length, false, false);
            } finally {
                Native.libc().close(fd);
            }
        }

        @Override
        public void close() {
            mapping.close();
        }
    }

    /**
     * A region above 1 GiB (io_uring's largest buffer) is registered as pieces of at most 1 GiB:
     * a transfer in the second piece names buffer 1, one across the 1 GiB boundary goes
     * unregistered; both are right. (Pins 1 GiB + 8 KiB of memory for the test's duration.)
     */
    @Test
    void aRegionAboveOneGibIsSplitIntoPieces() throws IOException {
        Path path = image(16, 7);
        long size = (1L << 30) + 2L * BLOCK;
        try (Image image = Image.open(path, ImageOptions.defaults().direct(true));
             IoUringBackend io = new IoUringBackend(image, BackendOptions.depth(1));
             Shared guest = new Shared(size)) {
            assertEquals(2, io.registerBuffers(new long[] {guest.address(0)}, new long[] {size}), io.bufferRegistration());
            long last = size - BLOCK;
            assertEquals(IoUringDescriptor.OP_READ_FIXED, transfer(io, false, 0, guest.address(last), BLOCK));
            assertEquals(1, io.sqeBufIndex(0));
            assertArrayEquals(fileBytes(path, 0, BLOCK), memory(guest.address(last), BLOCK));
            long across = (1L << 30) - BLOCK;
            assertEquals(IoUringDescriptor.OP_READ, transfer(io, false, BLOCK, guest.address(across), 2 * BLOCK));
            assertArrayEquals(fileBytes(path, BLOCK, 2 * BLOCK), memory(guest.address(across), 2 * BLOCK));
            assertEquals(IoUringDescriptor.OP_READ_FIXED, transfer(io, false, 3L * BLOCK, guest.address(across - BLOCK), BLOCK));
            assertEquals(0, io.sqeBufIndex(0));
            io.unregisterBuffers();
        }
    }

    /** Other back ends have no fixed buffers: registration answers EOPNOTSUPP and changes nothing. */
    @Test
    void otherBackEndsDeclineRegistration() throws IOException {
        Path path = image(4, 8);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend aio = IoBackends.open(BackendKind.LINUX_AIO, image, 4);
             Shared guest = new Shared(BLOCK)) {
            assertEquals(-Errno.EOPNOTSUPP, aio.registerBuffers(new long[] {guest.address(0)}, new long[] {BLOCK}));
        }
    }
}
