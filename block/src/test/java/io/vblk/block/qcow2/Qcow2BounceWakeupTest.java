package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * Review 10c: the bounce pool wakes ONE waiter per give-back; a woken waiter that finishes without
 * taking the buffer (the image became corrupt, or its request failed) passes the wake-up on to
 * nobody. With 2 MiB clusters (5 buffers) and 16 copy-on-write writes into compressed clusters
 * whose data does not inflate, 5 holders fail and wake 5 waiters that fail at PH_START; the
 * other 6 stay in bounceWaiters for ever (never complete; drain/close would loop for ever).
 */
class Qcow2BounceWakeupTest {
    private static final int CLUSTER = 2 << 20;
    private static final int N = 16;

    @Test
    void everyWaiterCompletesWhenHoldersFailOnACorruptImage(@TempDir Path dir) throws Exception {
        Path src = DriverRig.create(dir, "src.qcow2", "32M", "-o", "cluster_size=2M");
        DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 32M", src.toString());
        Path img = dir.resolve("c.qcow2");
        DriverRig.qemuImg("convert", "-c", "-O", "qcow2", "-o", "cluster_size=2M", src.toString(), img.toString());
        // Break the deflate stream of every compressed cluster (0xFF: reserved block type).
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.seek(40);
            long l1 = f.readLong();
            f.seek(l1);
            long l2 = f.readLong() & 0x00fffffffffffe00L;
            int x = 62 - (21 - 8);
            for (int i = 0; i < N; i++) {
                f.seek(l2 + 8L * i);
                long e = f.readLong();
                assertTrue((e & (1L << 62)) != 0, "cluster " + i + " compressed");
                long off = e & ((1L << x) - 1);
                f.seek(off);
                f.write(new byte[] {(byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff});
            }
        }
        Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 32, Qcow2Options.defaults());
        {
            NativeBuffer w = DriverRig.buffer(4096);
            for (int i = 0; i < N; i++) {
                IoVector v = new IoVector(4);
                v.add(w.address(), 512);
                assertEquals(0, d.write((long) i * CLUSTER + 4096, v, i));
            }
            Map<Long, Long> results = new HashMap<>();
            long deadline = System.nanoTime() + 60_000_000_000L; // a hang guard: a lost wake-up never completes
            while (results.size() < N && System.nanoTime() < deadline) {
                d.submit();
                d.poll((tag, r) -> results.put(tag, r), 64);
                if (results.size() < N && d.pendingSubmit() == 0) {
                    d.awaitCompletions(5);
                }
            }
            assertEquals(N, results.size(), "requests completed: " + results + " of " + N + "; bounce buffers "
                    + d.bounceBuffers() + ", driver inFlight " + d.inFlight());
            d.close(); // only when all completed: close() drains, which never ends otherwise
        }
    }
}
