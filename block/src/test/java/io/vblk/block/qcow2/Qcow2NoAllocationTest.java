package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * The qcow2 data path allocates nothing per request in steady state: reads of allocated,
 * unallocated (backing) and zero clusters, in-place writes and allocating copy-on-write writes,
 * measured with the thread's allocation counter over many requests after a warm-up.
 */
class Qcow2NoAllocationTest {
    private static final int DISK = 256 << 20;
    private static final int DEPTH = 16;

    @TempDir
    Path dir;

    private long completed;
    private long failures;
    private final CompletionSink sink = (tag, result) -> {
        completed++;
        if (result < 0) {
            failures++;
        }
    };

    @Test
    void steadyStateAllocatesNothingPerRequest() throws Exception {
        Path base = dir.resolve("base.raw");
        byte[] data = new byte[DISK / 4];
        new Random(1).nextBytes(data);
        Files.write(base, data);
        Path img = DriverRig.create(dir, "n.qcow2", String.valueOf(DISK), "-b", "base.raw", "-F", "raw");
        var mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long tid = Thread.currentThread().getId();
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, DEPTH, Qcow2Options.defaults())) {
            NativeBuffer[] bufs = new NativeBuffer[DEPTH];
            IoVector[] vecs = new IoVector[DEPTH];
            for (int i = 0; i < DEPTH; i++) {
                bufs[i] = new NativeBuffer(8192, 4096);
                vecs[i] = new IoVector(4);
                vecs[i].add(bufs[i].address(), 8192);
            }
            Random rnd = new Random(2);
            run(d, vecs, rnd, 30_000); // warm-up: JIT, bounce buffers, the L2 cache
            long before = mx.getThreadAllocatedBytes(tid);
            run(d, vecs, rnd, 30_000);
            long allocated = mx.getThreadAllocatedBytes(tid) - before;
            assertEquals(0, failures);
            assertTrue(allocated < 30_000, "allocated " + allocated + " bytes over 30,000 requests");
        }
    }

    private void run(Qcow2Driver d, IoVector[] vecs, Random rnd, int requests) {
        long target = completed + requests;
        int issued = 0;
        int inFlight = 0;
        int next = 0;
        while (completed < target) {
            while (inFlight < DEPTH && issued < requests) {
                long off = 8192L * rnd.nextInt(DISK / 8192);
                int kind = rnd.nextInt(4);
                IoVector v = vecs[next];
                next = (next + 1) % DEPTH;
                int rc = kind == 0 ? d.write(off, v, issued) : d.read(off, v, issued);
                if (rc != 0) {
                    break;
                }
                issued++;
                inFlight++;
            }
            d.submit();
            long before = completed;
            d.poll(sink, DEPTH);
            inFlight -= (int) (completed - before);
            if (completed == before && d.pendingSubmit() == 0) {
                d.awaitCompletions(5);
            }
        }
    }
}
