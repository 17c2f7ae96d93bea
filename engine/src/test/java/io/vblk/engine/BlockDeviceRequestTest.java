package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_IOERR;
import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.S_UNSUPP;
import static io.vblk.engine.BlkRequestDescriptor.T_DISCARD;
import static io.vblk.engine.BlkRequestDescriptor.T_FLUSH;
import static io.vblk.engine.BlkRequestDescriptor.T_GET_ID;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static io.vblk.engine.BlkRequestDescriptor.T_WRITE_ZEROES;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.Random;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;

/** Every request type through the real device, once per I/O back end (virtio 1.2 5.2.6). */
class BlockDeviceRequestTest {
    @TempDir
    Path dir;

    private static boolean storesData(BackendKind kind) {
        return kind != BackendKind.NULL;
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void writeThenReadBackThroughDeviceAndFile(BackendKind kind) throws Exception {
        assumeTrue(storesData(kind));
        try (DeviceRig rig = DeviceRig.builder(dir, kind).build()) {
            int len = 64 * 1024;
            long out = rig.buffer(0, len);
            byte[] data = new byte[len];
            new Random(1).nextBytes(data);
            UnsafeApi.copyMemory(data, UnsafeApi.arrayBaseOffset(byte[].class), null, rig.host(out, len), len);
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, 24, out, len, false));

            long in = rig.buffer(0, len);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 24, in, len, true));
            assertEquals(len + 1, rig.driver(0).lastUsedLength(), "used len = data + status (2.7.8)");
            byte[] back = new byte[len];
            UnsafeApi.copyMemory(null, rig.host(in, len), back, UnsafeApi.arrayBaseOffset(byte[].class), len);
            assertArrayEquals(data, back);

            assertEquals(S_OK, rig.roundTrip(0, T_FLUSH, 0, 0, 0, false));
            try (RandomAccessFile f = new RandomAccessFile(rig.imagePath.toFile(), "r")) {
                byte[] onDisk = new byte[len];
                f.seek(24 * 512);
                f.readFully(onDisk);
                assertArrayEquals(data, onDisk, "the file holds what the guest wrote");
            }
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void discardAndWriteZeroesReadBackAsZeros(BackendKind kind) throws Exception {
        assumeTrue(storesData(kind));
        try (DeviceRig rig = DeviceRig.builder(dir, kind).build()) {
            int len = 16 * 4096;
            long buf = rig.buffer(0, len);
            UnsafeApi.setMemory(rig.host(buf, len), len, (byte) 0x5a);
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, 0, buf, len, false));
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, 1024, buf, len, false));

            long seg = rig.buffer(0, 16);
            writeSegment(rig, seg, 8, 64, 0);
            assertEquals(S_OK, rig.roundTrip(0, T_DISCARD, 0, seg, 16, false));
            writeSegment(rig, seg, 1024 + 8, 64, 1);
            assertEquals(S_OK, rig.roundTrip(0, T_WRITE_ZEROES, 0, seg, 16, false));

            for (long base : new long[] {0, 1024}) {
                assertEquals(S_OK, rig.roundTrip(0, T_IN, base, buf, len, true));
                long h = rig.host(buf, len);
                for (int i = 0; i < len; i++) {
                    boolean zeroed = i >= 8 * 512 && i < (8 + 64) * 512;
                    assertEquals(zeroed ? 0 : 0x5a, UnsafeApi.getByte(h + i) & 0xff, "byte " + i + " of range at " + base);
                }
            }
        }
    }

    private static void writeSegment(DeviceRig rig, long gpa, long sector, int sectors, int flags) {
        long h = rig.host(gpa, 16);
        UnsafeApi.putLong(h, sector);
        UnsafeApi.putInt(h + 8, sectors);
        UnsafeApi.putInt(h + 12, flags);
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void getIdAnswersTheSerialNulPadded(BackendKind kind) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).config(b -> b.serial("disk-42")).build()) {
            long id = rig.buffer(0, 20);
            UnsafeApi.setMemory(rig.host(id, 20), 20, (byte) 0xee);
            assertEquals(S_OK, rig.roundTrip(0, T_GET_ID, 0, id, 20, true));
            byte[] got = new byte[20];
            UnsafeApi.copyMemory(null, rig.host(id, 20), got, UnsafeApi.arrayBaseOffset(byte[].class), 20);
            byte[] expected = new byte[20];
            System.arraycopy("disk-42".getBytes(), 0, expected, 0, 7);
            assertArrayEquals(expected, got);
            assertEquals(21, rig.driver(0).lastUsedLength());
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void badRequestsGetTheirStatusAndTheQueueStaysHealthy(BackendKind kind) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).imageBytes(1 << 20).build()) {
            long buf = rig.buffer(0, 8192);
            long capacity = (1 << 20) / 512;
            // 5.2.6.1: unknown type -> UNSUPP; GET_LIFETIME / SECURE_ERASE were not offered.
            assertEquals(S_UNSUPP, rig.roundTrip(0, 99, 0, buf, 512, true));
            assertEquals(S_UNSUPP, rig.roundTrip(0, 10, 0, buf, 512, true));
            assertEquals(S_UNSUPP, rig.roundTrip(0, 14, 0, buf, 16, false));
            // 5.2.6.2: past the end, straddling the end, a huge sector (overflow), not a sector multiple.
            assertEquals(S_IOERR, rig.roundTrip(0, T_IN, capacity, buf, 512, true));
            assertEquals(S_IOERR, rig.roundTrip(0, T_IN, capacity - 1, buf, 1024, true));
            assertEquals(S_IOERR, rig.roundTrip(0, T_OUT, -1L, buf, 512, false));
            assertEquals(S_IOERR, rig.roundTrip(0, T_OUT, Long.MAX_VALUE - 1, buf, 512, false));
            assertEquals(S_IOERR, rig.roundTrip(0, T_IN, 0, buf, 100, true));
            // Direction mismatches: IN with a readable data buffer, OUT with a writable one.
            assertEquals(S_IOERR, rig.roundTrip(0, T_IN, 0, buf, 512, false));
            assertEquals(S_IOERR, rig.roundTrip(0, T_OUT, 0, buf, 512, true));
            // DISCARD: unmap flag -> UNSUPP; unknown flag on WRITE_ZEROES -> UNSUPP; range past end -> IOERR;
            // not a whole segment -> IOERR.
            writeSegment(rig, buf, 0, 8, 1);
            assertEquals(S_UNSUPP, rig.roundTrip(0, T_DISCARD, 0, buf, 16, false));
            writeSegment(rig, buf, 0, 8, 2);
            assertEquals(S_UNSUPP, rig.roundTrip(0, T_WRITE_ZEROES, 0, buf, 16, false));
            writeSegment(rig, buf, capacity - 4, 8, 0);
            assertEquals(S_IOERR, rig.roundTrip(0, T_DISCARD, 0, buf, 16, false));
            assertEquals(S_IOERR, rig.roundTrip(0, T_DISCARD, 0, buf, 12, false));
            // Two segments when max_discard_seg is 1.
            assertEquals(S_IOERR, rig.roundTrip(0, T_DISCARD, 0, buf, 32, false));

            // The queue still works.
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            assertFalse(rig.device.isBroken(0));
            assertEquals(0, rig.device.counters(0).get(QueueCounters.QUARANTINES));
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void chainWithoutStatusByteIsReturnedWithLengthZero(BackendKind kind) throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, kind).build()) {
            long header = rig.buffer(0, 16);
            rig.writeHeader(header, T_IN, 0);
            int head = rig.driver(0).addDirect(new long[] {header}, new int[] {16}, new boolean[] {false}, 1);
            rig.kick(0);
            assertEquals(head, rig.awaitUsed(0, 10_000));
            assertEquals(0, rig.driver(0).lastUsedLength());
            assertEquals(S_OK, rig.roundTrip(0, T_FLUSH, 0, 0, 0, false));
        }
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void readOnlyDeviceRefusesWritesAndWritesNothing(BackendKind kind) throws Exception {
        Path image = DeviceRig.createImage(dir, 1 << 20);
        try (DeviceRig rig = DeviceRig.builder(dir, kind).image(image).readOnly(true).build()) {
            assertEquals(BlkFeatures.bit(BlkFeatures.RO), rig.device.negotiatedFeatures() & BlkFeatures.bit(BlkFeatures.RO));
            long buf = rig.buffer(0, 4096);
            UnsafeApi.setMemory(rig.host(buf, 4096), 4096, (byte) 1);
            assertEquals(S_IOERR, rig.roundTrip(0, T_OUT, 0, buf, 4096, false));
            assertEquals(S_UNSUPP, rig.roundTrip(0, T_DISCARD, 0, buf, 16, false), "DISCARD is not offered read-only");
            assertEquals(S_OK, rig.roundTrip(0, T_FLUSH, 0, 0, 0, false));
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
        }
        byte[] content = java.nio.file.Files.readAllBytes(image);
        for (byte b : content) {
            assertEquals(0, b);
        }
    }
}
