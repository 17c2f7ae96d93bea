package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The back ends on a block device. Opt-in, because it overwrites the device: run with
 * {@code -Dvblk.test.blockdev=/dev/loopN} on a scratch device (a loop device over a temporary
 * file: {@code losetup -f --show FILE}, and {@code losetup -d} afterwards).
 */
class BlockDeviceTest {
    static final int BLOCK = 4096;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void writeReadDiscardAndWriteZeroesOnABlockDevice(BackendKind kind) throws Exception {
        String device = System.getProperty("vblk.test.blockdev", "");
        assumeTrue(!device.isEmpty(), "set -Dvblk.test.blockdev=/dev/loopN to run");
        try (Image image = Image.open(Path.of(device), ImageOptions.defaults());
             IoBackend io = IoBackends.open(kind, image, 8);
             GuestMemory guest = new GuestMemory(20 * BLOCK)) {
            assertTrue(image.blockDevice(), image.toString());
            assertTrue(image.sizeBytes() >= 64 * BLOCK, image.toString());
            assertTrue(image.logicalBlockSize() >= 512, image.toString());
            guest.fillRandom(0, 8 * BLOCK, kind.ordinal() + 101);
            Recorder rec = new Recorder(8);
            IoVector v = new IoVector(2);
            v.add(guest.address(0), 4 * BLOCK);
            v.add(guest.address(4 * BLOCK + 1), 4 * BLOCK);
            assertEquals(0, io.prepareWrite(0, v, 0));
            assertEquals(0, io.prepareFlush(1));
            io.submit();
            io.drain(rec);
            assertEquals(8 * BLOCK, rec.result(0));
            assertEquals(0, rec.result(1));
            assertEquals(0, io.prepareDiscard(2 * BLOCK, BLOCK, 2));
            assertEquals(0, io.prepareWriteZeroes(5 * BLOCK, BLOCK, false, 3));
            io.submit();
            io.drain(rec);
            assertEquals(0, rec.result(2));
            assertEquals(0, rec.result(3));
            assertEquals(0, io.prepareRead(0, IoBackendTest.one(guest.address(10 * BLOCK), 8 * BLOCK), 4));
            io.submit();
            io.drain(rec);
            assertEquals(8 * BLOCK, rec.result(4));
            byte[] expected = new byte[8 * BLOCK];
            System.arraycopy(guest.copy(0, 4 * BLOCK), 0, expected, 0, 4 * BLOCK);
            System.arraycopy(guest.copy(4 * BLOCK + 1, 4 * BLOCK), 0, expected, 4 * BLOCK, 4 * BLOCK);
            // The discarded block (2) is not checked: BLKDISCARD promises no zeros (WRITE_ZEROES does).
            System.arraycopy(guest.copy(10 * BLOCK + 2 * BLOCK, BLOCK), 0, expected, 2 * BLOCK, BLOCK);
            java.util.Arrays.fill(expected, 5 * BLOCK, 6 * BLOCK, (byte) 0);
            assertArrayEquals(expected, guest.copy(10 * BLOCK, 8 * BLOCK));
        }
    }
}
