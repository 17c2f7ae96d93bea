package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * A DISCARD or WRITE_ZEROES segment may cover 2 GiB (0x3FFFFF sectors); with 512-byte clusters
 * that is 4 Mi pieces, most needing no I/O, which one driver call used to walk at once on an I/O
 * thread other disks share. The driver starts at most {@link Qcow2Driver#PIECES_PER_ROUND}
 * pieces per round and goes on at the next poll, so the request takes many polls, keeps the
 * driver "pending" (the I/O thread polls again rather than sleeping) and still ends right.
 */
class Qcow2LargeRangeYieldTest {
    @TempDir
    Path dir;

    @Test
    void aTwoGibWriteZeroesYieldsBetweenRoundsAndCompletes() throws Exception {
        Path p = DriverRig.create(dir, "small-clusters.qcow2", "4G", "-o", "cluster_size=512");
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer w = DriverRig.buffer(512);
            DriverRig.fill(w, new byte[] {7, 7, 7, 7}, 0, 4);
            long last = 0x3FFFFFL * 512 - 512;
            assertEquals(512, rig.one(rig.write(last, w, 512)));
            long length = 0x3FFFFFL * 512;
            long pieces = length / 512;
            assertEquals(0, d.writeZeroes(0, length, true, 42));
            assertTrue(d.pendingSubmit() > 0, "a yielded request keeps the driver pending");
            long[] result = {Long.MIN_VALUE};
            int polls = 0;
            while (result[0] == Long.MIN_VALUE) {
                d.submit();
                d.poll((tag, r) -> {
                    assertEquals(42, tag);
                    result[0] = r;
                }, 16);
                if (result[0] == Long.MIN_VALUE && d.pendingSubmit() == 0) {
                    d.awaitCompletions(5);
                }
                polls++;
                assertTrue(polls < 1_000_000, "never completed");
            }
            assertEquals(0, result[0]);
            assertTrue(polls >= pieces / Qcow2Driver.PIECES_PER_ROUND,
                    "completed after " + polls + " polls: more than " + Qcow2Driver.PIECES_PER_ROUND + " pieces in one round");
            NativeBuffer r = DriverRig.buffer(512);
            DriverRig.poison(r);
            assertEquals(512, rig.one(rig.read(last, r, 512)));
            assertEquals(0, DriverRig.bytes(r, 4)[0], "zeroed at the range's end");
        }
    }
}
