package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.Errno;
import io.vblk.sys.Mapping;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.sys.ProcessVm;

/**
 * The kernel bounce copies ({@link BounceCopier}) at their limits: a batch of bounced operations
 * whose guest segments far exceed one call's {@link ProcessVm#IOV_MAX} iovecs (16 operations of
 * 256 segments: at least four calls), with one operation, in a later call, whose LAST segment
 * lies in guest memory the frontend cut (so the kernel's count stops inside that operation, after
 * it moved most of it). Exactly that operation must fail with EFAULT, write nothing (writes) or
 * report nothing (reads), and every other operation, before and after it, must move its data.
 */
class BounceBatchAttackTest {
    private static final int OPS = 16;
    private static final int SEGMENTS = BackendOptions.DEFAULT_MAX_SEGMENTS;
    private static final int SEGMENT = 512;
    private static final int OP_BYTES = SEGMENTS * SEGMENT;
    private static final int CUT_OP = 11;

    @TempDir
    Path dir;

    /** {@code SEGMENTS} misaligned 512-byte segments from {@code base + 8}; the last at {@code last} when non-zero. */
    private static IoVector segments(long base, long last) {
        IoVector v = new IoVector(SEGMENTS);
        for (int s = 0; s < SEGMENTS; s++) {
            long address = s == SEGMENTS - 1 && last != 0 ? last : base + 8 + (long) s * SEGMENT;
            assertEquals(0, v.add(address, SEGMENT));
        }
        return v;
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void writesSpanningManyCopyCallsFailOnlyTheOneWhoseLastSegmentWasCut(BackendKind kind) throws IOException {
        Path path = newFile((long) OPS * OP_BYTES);
        int fd = Memfd.create("cut", 4096);
        try (Image image = Image.open(path, ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(OPS * OP_BYTES + 4096);
             Mapping cut = Mapping.map(fd, 0, 4096, false, false)) {
            assumeTrue(image.memoryAlignment() > 1, "nothing is bounced without O_DIRECT");
            IoBackend io = IoBackends.open(kind, image, OPS);
            try {
                assumeTrue(((SlottedBackend) io).kernelCopy(), "kernel copies refused here");
                guest.fillRandom(0, OPS * OP_BYTES + 4096, 11);
                assertEquals(0, Native.libc().ftruncate(fd, 0)); // the frontend cuts its file
                for (int i = 0; i < OPS; i++) {
                    long base = guest.address(i * OP_BYTES);
                    assertEquals(0, io.prepareWrite((long) i * OP_BYTES,
                            segments(base, i == CUT_OP ? cut.address() + 8 : 0), i));
                }
                Recorder rec = new Recorder(OPS);
                io.submit();
                io.drain(rec);
                for (int i = 0; i < OPS; i++) {
                    if (i == CUT_OP) {
                        assertEquals(-Errno.EFAULT, rec.result(i), "the cut write");
                        assertArrayEquals(new byte[OP_BYTES], IoBackendTest.readFile(path, (long) i * OP_BYTES, OP_BYTES),
                                "the cut write wrote nothing");
                    } else {
                        assertEquals(OP_BYTES, rec.result(i), "write " + i);
                        assertArrayEquals(guest.copy(i * OP_BYTES + 8, OP_BYTES),
                                IoBackendTest.readFile(path, (long) i * OP_BYTES, OP_BYTES), "write " + i + "'s data");
                    }
                }
                assertEquals(0, io.inFlight());
                assertEquals(OPS, io.freeSlots(), "every slot back");
            } finally {
                io.close();
            }
        } finally {
            Native.libc().close(fd);
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void readsSpanningManyCopyCallsFailOnlyTheOneWhoseLastSegmentWasCut(BackendKind kind) throws IOException {
        Path path = newFile((long) OPS * OP_BYTES);
        byte[] data = IoBackendTest.random(OPS * OP_BYTES, 5);
        IoBackendTest.writeFile(path, 0, data);
        int fd = Memfd.create("cut", 4096);
        try (Image image = Image.open(path, ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(OPS * OP_BYTES + 4096);
             Mapping cut = Mapping.map(fd, 0, 4096, false, false)) {
            assumeTrue(image.memoryAlignment() > 1, "nothing is bounced without O_DIRECT");
            IoBackend io = IoBackends.open(kind, image, OPS);
            try {
                assumeTrue(((SlottedBackend) io).kernelCopy(), "kernel copies refused here");
                assertEquals(0, Native.libc().ftruncate(fd, 0));
                for (int i = 0; i < OPS; i++) {
                    long base = guest.address(i * OP_BYTES);
                    assertEquals(0, io.prepareRead((long) i * OP_BYTES,
                            segments(base, i == CUT_OP ? cut.address() + 8 : 0), i));
                }
                Recorder rec = new Recorder(OPS);
                io.submit();
                io.drain(rec);
                byte[] want = new byte[OP_BYTES];
                for (int i = 0; i < OPS; i++) {
                    if (i == CUT_OP) {
                        assertEquals(-Errno.EFAULT, rec.result(i), "the cut read");
                    } else {
                        assertEquals(OP_BYTES, rec.result(i), "read " + i);
                        System.arraycopy(data, i * OP_BYTES, want, 0, OP_BYTES);
                        assertArrayEquals(want, guest.copy(i * OP_BYTES + 8, OP_BYTES), "read " + i + "'s data");
                    }
                }
                assertEquals(0, io.inFlight());
                assertEquals(OPS, io.freeSlots(), "every slot back");
            } finally {
                io.close();
            }
        } finally {
            Native.libc().close(fd);
        }
    }

    private Path newFile(long sizeBytes) throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(sizeBytes);
        }
        return path;
    }
}
