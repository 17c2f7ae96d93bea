package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.ForwardingBackend;

/**
 * A barrier flush (the driver's own fdatasync between reused-cluster data and its L2 entry) that
 * fails with EIO fails the piece that waited for it, and every later guest FLUSH (rev14e H-a).
 * Linux reports a writeback error to an open file once (errseq): the barrier consumed it, so the
 * guest's next FLUSH succeeded although writes the guest saw completed before it (here an
 * in-place write) may be lost. The failure is sticky, as QEMU's page_cache_inconsistent.
 */
class Qcow2BarrierFailureStickyTest {
    static final long K_BARRIER_TAG = 7L << 24;

    static final class FailBarrier extends ForwardingBackend {
        boolean armed;
        boolean failNext;
        int barriersFailed;

        FailBarrier(IoBackend real) {
            super(real);
        }

        @Override
        public int prepareFlush(long userData) {
            int rc = real.prepareFlush(userData);
            if (rc == 0 && armed && userData == K_BARRIER_TAG) {
                armed = false;
                failNext = true;
            }
            return rc;
        }

        @Override
        public int poll(CompletionSink sink, int max) {
            return real.poll((userData, result) -> {
                if (failNext && userData == K_BARRIER_TAG) {
                    failNext = false;
                    barriersFailed++;
                    sink.complete(userData, -5); // EIO, as fdatasync reports a lost writeback
                } else {
                    sink.complete(userData, result);
                }
            }, max);
        }
    }

    @Test
    void aFailedBarrierFlushIsNotForgottenByTheNextGuestFlush(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "b.qcow2", "4M", "-o", "cluster_size=65536");
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        FailBarrier io = new FailBarrier(host.openBackend(64));
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            b.buffer().setMemory(0, 4096, (byte) 0x77);
            assertEquals(4096, rig.one(rig.write(2L * 65536, b, 4096)));      // L2 table + cluster 2
            assertEquals(4096, rig.one(rig.write(3L * 65536, b, 4096)));      // cluster 3 (COPIED)
            assertEquals(0, rig.one(rig.writeZeroes(2L * 65536, 65536)));     // cluster 2: ZERO|COPIED
            assertEquals(4096, rig.one(rig.write(3L * 65536 + 4096, b, 4096))); // in place: completed, not durable
            io.armed = true;
            long w = rig.one(rig.write(2L * 65536 + 8192, b, 4096));          // reuses cluster 2: barrier fails
            assertEquals(1, io.barriersFailed, "the barrier flush was not issued/failed");
            assertTrue(w < 0, "the piece behind the failed barrier fails: " + w);
            long f = rig.one(rig.flush());
            assertTrue(f < 0, "the guest's FLUSH after a failed fdatasync (barrier) must fail, got " + f
                    + ": the in-place write completed before it is not known to be durable");
            assertTrue(rig.one(rig.flush()) < 0, "sticky: every later FLUSH fails too");
            // Nor is the image handed over (a migration's source) as if it were durable.
            IOException e = assertThrows(IOException.class, d::inactivate);
            assertTrue(e.getMessage().contains("earlier flush failed"), e.getMessage());
        }
    }
}
