package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Seeded random batches of mixed operations (sector-granular, multi-segment, with and without
 * aligned guest buffers) checked against an in-memory model of the image. Operations in one
 * batch touch disjoint regions, so the model does not depend on completion order.
 */
class RandomWorkloadTest {
    static final int SECTOR = 512;
    static final int REGIONS = 8;
    static final int REGION_BYTES = 64 * 1024;
    static final int IMAGE_BYTES = REGIONS * REGION_BYTES;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void randomBatchesMatchTheModel(BackendKind kind) throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(IMAGE_BYTES);
        }
        byte[] model = new byte[IMAGE_BYTES];
        SplittableRandom random = new SplittableRandom(kind.ordinal() * 1000L + 7);
        try (Image image = Image.open(path, ImageOptions.defaults());
             IoBackend io = IoBackends.open(kind, image, REGIONS);
             GuestMemory guest = new GuestMemory(REGIONS * 2 * REGION_BYTES)) {
            int sector = image.offsetAlignment();
            IoVector[] vectors = new IoVector[REGIONS];
            int[] kinds = new int[REGIONS];
            long[] offsets = new long[REGIONS];
            int[] lengths = new int[REGIONS];
            int[] guestAt = new int[REGIONS];
            for (int r = 0; r < REGIONS; r++) {
                vectors[r] = new IoVector(8);
            }
            Recorder rec = new Recorder(REGIONS);
            for (int batch = 0; batch < 150; batch++) {
                rec.reset();
                int ops = 1 + random.nextInt(REGIONS);
                for (int r = 0; r < ops; r++) {
                    int sectors = 1 + random.nextInt(REGION_BYTES / sector / 2);
                    lengths[r] = sectors * sector;
                    offsets[r] = (long) r * REGION_BYTES + (long) random.nextInt(REGION_BYTES / sector - sectors + 1) * sector;
                    kinds[r] = random.nextInt(10);
                    guestAt[r] = r * 2 * REGION_BYTES + (random.nextBoolean() ? 0 : 1 + random.nextInt(511));
                    int rc;
                    if (kinds[r] < 4) {
                        guest.fillRandom(guestAt[r], lengths[r], random.nextLong());
                        rc = io.prepareWrite(offsets[r], split(vectors[r], guest, guestAt[r], lengths[r], random), r);
                    } else if (kinds[r] < 8) {
                        guest.fill(guestAt[r], lengths[r], (byte) 0x7f);
                        rc = io.prepareRead(offsets[r], split(vectors[r], guest, guestAt[r], lengths[r], random), r);
                    } else if (kinds[r] == 8) {
                        rc = io.prepareDiscard(offsets[r], lengths[r], r);
                    } else {
                        rc = io.prepareWriteZeroes(offsets[r], lengths[r], random.nextBoolean(), r);
                    }
                    assertEquals(0, rc, "batch " + batch + " op " + r);
                }
                if (random.nextInt(4) == 0) {
                    // A flush rides along sometimes; it needs no slot of the regions' own.
                    io.submit();
                    io.drain(rec);
                    Recorder flush = new Recorder(1);
                    assertEquals(0, io.prepareFlush(0));
                    io.submit();
                    io.drain(flush);
                    assertEquals(0, flush.result(0));
                } else {
                    io.submit();
                    io.drain(rec);
                }
                for (int r = 0; r < ops; r++) {
                    int from = (int) offsets[r];
                    if (kinds[r] < 4) {
                        assertEquals(lengths[r], rec.result(r));
                        System.arraycopy(guest.copy(guestAt[r], lengths[r]), 0, model, from, lengths[r]);
                    } else if (kinds[r] < 8) {
                        assertEquals(lengths[r], rec.result(r));
                        assertArrayEquals(Arrays.copyOfRange(model, from, from + lengths[r]), guest.copy(guestAt[r], lengths[r]),
                                "batch " + batch + " read " + r + " at " + from + " length " + lengths[r]);
                    } else {
                        assertEquals(0, rec.result(r));
                        Arrays.fill(model, from, from + lengths[r], (byte) 0);
                    }
                }
            }
        }
        assertArrayEquals(model, IoBackendTest.readFile(path, 0, IMAGE_BYTES));
    }

    /** Cuts {@code length} bytes at {@code at} into up to 8 segments of whole sectors but the last. */
    private static IoVector split(IoVector v, GuestMemory guest, int at, int length, SplittableRandom random) {
        v.clear();
        int pieces = 1 + random.nextInt(8);
        int left = length;
        int pos = at;
        for (int i = 0; i < pieces - 1 && left > SECTOR; i++) {
            // Odd-sized pieces too: the back end must bounce them.
            int piece = random.nextBoolean() ? SECTOR * (1 + random.nextInt(left / SECTOR)) : 1 + random.nextInt(left - 1);
            if (piece >= left) {
                break;
            }
            v.add(guest.address(pos), piece);
            pos += piece;
            left -= piece;
        }
        v.add(guest.address(pos), left);
        return v;
    }
}
