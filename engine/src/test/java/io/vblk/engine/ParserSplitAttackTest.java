package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static io.vblk.engine.BlkRequestDescriptor.T_WRITE_ZEROES;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.nio.file.Path;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.SplitQueueDriver;

/**
 * Review rev11e: RequestParser.copyFromCursor (one copy per piece) against a hostile layout: the header
 * split 1 + 0 + 15 bytes with its first byte the region's very last (guard page behind it), a
 * zero-length descriptor at an unmapped address, and a write-zeroes segment split 7 + 9 with its
 * second piece ending one byte before the region's end.
 */
class ParserSplitAttackTest {
    @TempDir
    Path dir;

    @Test
    void headerAndSegmentsSplitAtTheRegionEndParseExactly() throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).build()) {
            long end = rig.queues.length * DeviceRig.QUEUE_AREA + DeviceRig.BUFFERS;
            SplitQueueDriver d = rig.driver(0);
            // 1. fill sectors 0..15 with 0x5a
            long data = rig.buffer(0, 8192);
            UnsafeApi.setMemory(rig.host(data, 8192), 8192, (byte) 0x5a);
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, 0, data, 8192, false));

            // 2. WRITE_ZEROES of sectors 2..5, header 1 (region's last byte) + 0 + 15, segment 7 + 9
            long hdrRest = rig.buffer(0, 4096);
            long seg1 = rig.buffer(0, 4096);
            long status = rig.buffer(0, 4096);
            byte[] hdr = new byte[16];
            java.nio.ByteBuffer.wrap(hdr).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(0, T_WRITE_ZEROES).putLong(8, 0);
            byte[] seg = new byte[16];
            java.nio.ByteBuffer.wrap(seg).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(0, 2).putInt(8, 4).putInt(12, 0);
            long hdrFirst = end - 1;
            long segSecond = end - 10;
            UnsafeApi.putByte(rig.host(hdrFirst, 1), hdr[0]);
            for (int i = 1; i < 16; i++) {
                UnsafeApi.putByte(rig.host(hdrRest, 16) + i - 1, hdr[i]);
            }
            for (int i = 0; i < 7; i++) {
                UnsafeApi.putByte(rig.host(seg1, 16) + i, seg[i]);
            }
            for (int i = 7; i < 16; i++) {
                UnsafeApi.putByte(rig.host(segSecond, 9) + i - 7, seg[i]);
            }
            UnsafeApi.putByte(rig.host(status, 1), (byte) 0x77);
            long[] gpas = {hdrFirst, 0x7fff_ffff_f000L, hdrRest, seg1, end, segSecond, status};
            int[] lens = {1, 0, 15, 7, 0, 9, 1};
            boolean[] w = {false, false, false, false, false, false, true};
            int head = d.addDirect(gpas, lens, w, gpas.length);
            rig.kick(0);
            assertEquals(head, rig.awaitUsed(0, 10_000));
            assertNull(rig.device.brokenReason(0));
            assertEquals(S_OK, UnsafeApi.getByte(rig.host(status, 1)), "write-zeroes status");

            // 3. read back: sectors 2..5 zero, the rest 0x5a
            long in = rig.buffer(0, 8192);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, in, 8192, true));
            long h = rig.host(in, 8192);
            for (int i = 0; i < 8192; i++) {
                boolean zeroed = i >= 2 * 512 && i < 6 * 512;
                assertEquals(zeroed ? 0 : 0x5a, UnsafeApi.getByte(h + i) & 0xff, "byte " + i);
            }
        }
    }
}
