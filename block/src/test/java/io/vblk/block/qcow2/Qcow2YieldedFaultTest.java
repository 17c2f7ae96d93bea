package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoVector;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.NativeBuffer;

/**
 * Review 10c: failStalled (after a late fault, back ends idle) empties every wait list, {@code yielded}
 * included, and fails those requests with EIO; but a yielded request waits for nothing (only the
 * next round), so a healthy 2 GiB WRITE_ZEROES fails with EIO because another request faulted.
 */
class Qcow2YieldedFaultTest {
    @Test
    void aYieldedWriteZeroesIsNotFailedByAnotherRequestsFault(@TempDir Path dir) throws Exception {
        Path p = DriverRig.create(dir, "small.qcow2", "4G", "-o", "cluster_size=512");
        Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults());
        try {
            DriverRig rig = new DriverRig(d);
            NativeBuffer w = DriverRig.buffer(4096);
            assertEquals(512, rig.one(rig.write(0, w, 512)), "cluster 0 allocated, its L2 loaded");
            IoVector v = new IoVector(4);
            v.add(w.address(), 512);
            FaultPoints.arm(FaultPoints.PREPARE_TAKEN);
            try {
                d.read(0, v, 1);
            } catch (InternalError e) {
                assertEquals(FaultPoints.MESSAGE, e.getMessage());
            }
            assertTrue(FaultPoints.fired(), "the fault landed");
            FaultPoints.disarm();
            long length = 0x3FFFFFL * 512 - 4096;
            assertEquals(0, d.writeZeroes(4096, length, true, 2));
            Map<Long, Long> results = new HashMap<>();
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (results.size() < 2 && System.nanoTime() < deadline) {
                d.submit();
                d.poll((tag, r) -> results.put(tag, r), 16);
                if (results.size() < 2 && d.pendingSubmit() == 0) {
                    d.awaitCompletions(5);
                }
            }
            assertEquals(-5L, results.get(1L), "the faulted read fails: " + results);
            assertEquals(0L, results.get(2L), "the yielded WRITE_ZEROES waited for nothing and must not fail: " + results);
        } finally {
            FaultPoints.disarm();
            d.close();
        }
    }
}
