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
import io.vblk.sys.NativeBuffer;

/**
 * Review 10c: the per-round piece budget is shared and FIFO: a 2 GiB WRITE_ZEROES that yielded first
 * is woken first at every poll and spends the whole budget again, so a 512-byte READ accepted
 * meanwhile (budget already spent: it yields at its first piece) yields at every round too and
 * completes only after the whole WRITE_ZEROES (about 64 rounds), head-of-line behind it.
 */
class Qcow2YieldFairnessTest {
    @Test
    void aSmallReadIsNotHeldBehindAYieldingWriteZeroes(@TempDir Path dir) throws Exception {
        Path p = DriverRig.create(dir, "small.qcow2", "4G", "-o", "cluster_size=512");
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer w = DriverRig.buffer(4096);
            assertEquals(512, rig.one(rig.write(0, w, 512)), "cluster 0 allocated, its L2 loaded");
            assertEquals(0, d.writeZeroes(1L << 20, 0x3FFFFFL * 512 - (1L << 20), true, 2));
            Map<Long, Long> results = new HashMap<>();
            d.submit();
            d.poll((tag, r) -> results.put(tag, r), 16); // the WRITE_ZEROES goes on (and yields again)
            IoVector v = new IoVector(4);
            v.add(w.address(), 512);
            assertEquals(0, d.read(0, v, 3));
            int polls = 0;
            int readDoneAt = -1;
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (results.size() < 2 && System.nanoTime() < deadline) {
                d.submit();
                d.poll((tag, r) -> results.put(tag, r), 16);
                polls++;
                if (readDoneAt < 0 && results.containsKey(3L)) {
                    readDoneAt = polls;
                }
                if (results.size() < 2 && d.pendingSubmit() == 0) {
                    d.awaitCompletions(5);
                }
            }
            assertEquals(512L, results.get(3L));
            assertEquals(0L, results.get(2L));
            assertTrue(readDoneAt <= 4, "the 512-byte read completed at poll " + readDoneAt + " of " + polls
                    + ": held behind the yielding WRITE_ZEROES");
        }
    }
}
