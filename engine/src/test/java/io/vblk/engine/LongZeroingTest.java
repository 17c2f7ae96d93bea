package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_DISCARD;
import static io.vblk.engine.BlkRequestDescriptor.T_FLUSH;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static io.vblk.engine.BlkRequestDescriptor.T_WRITE_ZEROES;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;

/**
 * Issue 10: a guest's largest write-zeroes (2 GiB less a block) and discard do not stall the I/O
 * thread: with two queues on one thread, queue 1 does 100 write/read round trips while queue 0's
 * zeroing is submitted and not yet reaped, on every native back end; afterwards the zeroed range
 * reads as zeros, the block after it survives, and FLUSH completes. (The back-end level proof
 * that the zeroing runs off the submitting thread, with seconds of written zeros, is aio's
 * OffloadTest.)
 */
class LongZeroingTest {
    private static final long SECTOR = 512;
    /** The most sectors one segment may name (the default max_write_zeroes_sectors), 4 KiB aligned. */
    private static final int SECTORS = 0x3F_FFF8;
    private static final long ZEROED = SECTORS * SECTOR;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"LINUX_AIO", "IO_URING", "THREADS"})
    void anotherQueueOnTheSameThreadIsServedWhileAHugeZeroingIsInFlight(BackendKind kind) throws Exception {
        Path image = dir.resolve("huge.raw");
        long imageBytes = 2 * ZEROED + (1 << 20);
        try (RandomAccessFile file = new RandomAccessFile(image.toFile(), "rw")) {
            file.setLength(imageBytes);
        }
        byte[] mark = new byte[4096];
        java.util.Arrays.fill(mark, (byte) 0x5a);
        for (long at : new long[] {0, ZEROED / 2, ZEROED - 4096, ZEROED, 2 * ZEROED - 4096, 2 * ZEROED}) {
            write(image, at, mark);
        }
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).queueThreads(0, 0).build();
        try (DeviceRig rig = DeviceRig.builder(dir, kind).image(image).config(b -> b.numQueues(2)).tuning(tuning).build()) {
            long segs = rig.buffer(0, 32);
            segment(rig, segs, 0, SECTORS, 0);
            segment(rig, segs + 16, ZEROED / SECTOR, SECTORS, 0);
            int zeroes = rig.add(0, T_WRITE_ZEROES, 0, segs, 16, false);
            int discard = rig.add(0, T_DISCARD, 0, segs + 16, 16, false);
            rig.kick(0);
            long buf = rig.buffer(1, 4096);
            long h = rig.host(buf, 4096);
            for (int i = 0; i < 50; i++) {
                UnsafeApi.setMemory(h, 4096, (byte) (i + 1));
                long sector = (2 * ZEROED + 4096 + i * 4096L) / SECTOR;
                assertEquals(S_OK, rig.roundTrip(1, T_OUT, sector, buf, 4096, false));
                UnsafeApi.setMemory(h, 4096, (byte) 0);
                assertEquals(S_OK, rig.roundTrip(1, T_IN, sector, buf, 4096, true));
                assertEquals((byte) (i + 1), UnsafeApi.getByte(h + 4095));
            }
            int first = rig.awaitUsed(0, 60_000);
            int second = rig.awaitUsed(0, 60_000);
            assertEquals(java.util.Set.of(zeroes, discard), java.util.Set.of(first, second));
            assertEquals(S_OK, rig.status(0, zeroes));
            assertEquals(S_OK, rig.status(0, discard));
            assertEquals(S_OK, rig.roundTrip(0, T_FLUSH, 0, 0, 0, false));
            assertEquals(S_OK, rig.roundTrip(1, T_FLUSH, 0, 0, 0, false));
        }
        byte[] zeros = new byte[4096];
        for (long at : new long[] {0, ZEROED / 2, ZEROED - 4096, ZEROED, 2 * ZEROED - 4096}) {
            assertArrayEquals(zeros, read(image, at), "zeroed at " + at);
        }
        assertArrayEquals(mark, read(image, 2 * ZEROED), "the block after both ranges survives");
    }

    private static void segment(DeviceRig rig, long gpa, long sector, int sectors, int flags) {
        long h = rig.host(gpa, 16);
        UnsafeApi.putLong(h, sector);
        UnsafeApi.putInt(h + 8, sectors);
        UnsafeApi.putInt(h + 12, flags);
    }

    private static void write(Path path, long at, byte[] data) throws Exception {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(data), at);
        }
    }

    private static byte[] read(Path path, long at) throws Exception {
        ByteBuffer b = ByteBuffer.allocate(4096);
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            ch.read(b, at);
        }
        return b.array();
    }
}
