package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.block.BlockDriver;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.ForwardingBackend;

/**
 * rev14a H2: an allocating write that copies the backing file's bytes into its new cluster wrote
 * the L2 entry with no flush after the copy; a flush must come in between. The disk (its volatile cache, or the page cache
 * without O_DIRECT) may make the L2 write durable first; a host crash then leaves the entry
 * pointing at a cluster without the copied bytes: the part of the cluster the guest did not
 * write reads as zeros instead of the backing file's data it showed (and maybe flushed) before.
 * QEMU flushes in between (qcow2_cache_depends_on_flush in perform_cow).
 */
class Qcow2CowBarrierTest {
    static final class Recorder extends ForwardingBackend {
        final List<String> ops = new ArrayList<>();

        Recorder(IoBackend real) {
            super(real);
        }

        @Override
        public int prepareWrite(long offset, IoVector buffers, long userData) {
            ops.add("W" + offset + "+" + buffers.totalLength());
            return real.prepareWrite(offset, buffers, userData);
        }

        @Override
        public int prepareFlush(long userData) {
            ops.add("F");
            return real.prepareFlush(userData);
        }
    }

    @Test
    void theL2EntryOfACopiedClusterFollowsAFlushAfterTheCopy(@TempDir Path dir) throws Exception {
        Path base = dir.resolve("base.raw");
        byte[] data = new byte[4 << 20];
        java.util.Arrays.fill(data, (byte) 0x5b);
        Files.write(base, data);
        Path img = DriverRig.create(dir, "o.qcow2", "4M", "-o", "cluster_size=65536", "-b", "base.raw", "-F", "raw");
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        Recorder rec = new Recorder(host.openBackend(64));
        Image baseImage = Image.open(base, ImageOptions.defaults().readOnly(true).direct(false));
        BlockDriver backing = RawDriver.owning(IoBackends.open(BackendKind.IO_URING, baseImage, 8),
                baseImage);
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, rec, backing, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            b.buffer().setMemory(0, 4096, (byte) 0x77);
            assertEquals(4096, rig.one(rig.write(3L * 65536 + 4096, b, 4096))); // COW head and tail from base
            // Find the cluster-sized copy-on-write data write and the L2 write after it.
            System.out.println("OPS " + rec.ops);
            int cow = -1;
            for (int i = 0; i < rec.ops.size(); i++) {
                if (rec.ops.get(i).endsWith("+65536")) {
                    cow = i; // the last cluster-sized write: the data cluster with the copied head and tail
                }
            }
            assertTrue(cow >= 0, "no COW write: " + rec.ops);
            List<String> after = rec.ops.subList(cow + 1, rec.ops.size());
            assertTrue(!after.isEmpty(), rec.ops.toString());
            assertEquals("F", after.get(0), "after the copy-on-write data write " + rec.ops.get(cow)
                    + " the next operation must be a flush, before the L2 write; got " + rec.ops);
        }
    }

    /**
     * A cluster made a zero cluster that keeps its allocation (ZERO|COPIED) is reused by the next
     * write: its old bytes are the guest's former data, so the new data must be durable before
     * the entry drops the zero flag. A write into a fresh cluster needs no flush at all.
     */
    @Test
    void aReusedZeroClusterIsFlushedBeforeItsEntryAndAFreshOneIsNot(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "z.qcow2", "4M", "-o", "cluster_size=65536");
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        Recorder rec = new Recorder(host.openBackend(64));
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, rec, null, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            b.buffer().setMemory(0, 4096, (byte) 0x77);
            assertEquals(4096, rig.one(rig.write(2L * 65536, b, 4096))); // creates the L2 table
            rec.ops.clear();
            assertEquals(4096, rig.one(rig.write(3L * 65536, b, 4096))); // a fresh cluster, zeros around
            assertEquals(2, rec.ops.size(), "data and L2 write, no flush: " + rec.ops);
            assertEquals(0, rig.one(rig.writeZeroes(2L * 65536, 65536))); // ZERO|COPIED, allocation kept
            rec.ops.clear();
            assertEquals(4096, rig.one(rig.write(2L * 65536 + 8192, b, 4096))); // reuses it
            int data = -1;
            for (int i = 0; i < rec.ops.size(); i++) {
                data = rec.ops.get(i).endsWith("+65536") ? i : data;
            }
            assertTrue(data >= 0 && data + 1 < rec.ops.size(), "the reused cluster is rewritten: " + rec.ops);
            assertEquals("F", rec.ops.get(data + 1), "a flush between the reused cluster's data and its L2"
                    + " entry: " + rec.ops);
        }
    }
}
