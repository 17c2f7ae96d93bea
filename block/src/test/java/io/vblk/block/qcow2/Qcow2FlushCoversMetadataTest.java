package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.GatedBackend;

/**
 * rev14a H1: a FLUSH must not complete while an L2 (or L1) table write that a completed guest
 * write depends on is still in flight: fdatasync does not cover it, and a crash then loses a
 * write the guest saw completed and flushed. The held table write stands for one the disk has
 * not finished; the FLUSH may complete only once it has.
 */
class Qcow2FlushCoversMetadataTest {
    private static final int CLUSTER = 64 << 10;
    private static final int LEN = 4096;

    private final Map<Long, Long> done = new HashMap<>();

    /** Counts the flushes that reach the disk. */
    static final class FlushCounter extends ForwardingBackend {
        int flushes;

        FlushCounter(IoBackend real) {
            super(real);
        }

        @Override
        public int prepareFlush(long userData) {
            flushes++;
            return real.prepareFlush(userData);
        }
    }

    private void drive(Qcow2Driver d, int rounds) throws Exception {
        for (int i = 0; i < rounds; i++) {
            d.submit();
            d.poll((tag, result) -> done.put(tag, result), 64);
            if (d.pendingSubmit() == 0) {
                d.awaitCompletions(5);
            }
        }
    }

    private void await(Qcow2Driver d, long tag) throws Exception {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (!done.containsKey(tag)) {
            assertTrue(System.nanoTime() < deadline, "request " + tag + " never completed");
            drive(d, 1);
        }
    }

    private static IoVector vec(NativeBuffer b) {
        IoVector v = new IoVector(1);
        v.add(b.address(), LEN);
        return v;
    }

    private static long readLong(Path img, long at) throws Exception {
        try (FileChannel ch = FileChannel.open(img)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            Qcow2Image.readFully(ch, b, at);
            return b.flip().getLong();
        }
    }

    /** An in-place write into a cluster whose allocating write's L2 update is still in flight. */
    @Test
    void flushAfterAnInPlaceWriteWaitsForTheL2EntryItDependsOn(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "a.qcow2", "4M", "-o", "cluster_size=65536");
        DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4k", img.toString());
        long l1Offset = readLong(img, 40);
        long l2Offset = readLong(img, l1Offset) & Qcow2Descriptor.L1E_OFFSET_MASK;

        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        GatedBackend.Holder holder = new GatedBackend.Holder(Set.of(l2Offset)); // the L2 table's first sector
        FlushCounter counter = new FlushCounter(host.openBackend(64));
        IoBackend io = holder.wrap(counter);
        Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, 8, Qcow2Options.defaults());
        try {
            NativeBuffer a = DriverRig.buffer(LEN);
            NativeBuffer b = DriverRig.buffer(LEN);
            a.buffer().setMemory(0, LEN, (byte) 0xaa);
            b.buffer().setMemory(0, LEN, (byte) 0xbb);
            assertEquals(0, d.read(0, vec(a), 100)); // loads the L2 table
            await(d, 100L);
            a.buffer().setMemory(0, LEN, (byte) 0xaa);

            // A: allocating write into guest cluster 5; its L2 write (sector 0 of the table) is held.
            assertEquals(0, d.write(5L * CLUSTER, vec(a), 1));
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (holder.held() == 0) {
                assertTrue(System.nanoTime() < deadline, "the L2 write never came");
                drive(d, 1);
            }
            // B: a write into the same cluster goes in place (the cached entry says COPIED) and completes.
            assertEquals(0, d.write(5L * CLUSTER + LEN, vec(b), 2));
            await(d, 2L);
            assertEquals(LEN, done.get(2L), "B completed");
            // The guest flushes after B completed.
            int flushes = counter.flushes;
            assertEquals(0, d.flush(3));
            drive(d, 5);
            long entry = readLong(img, l2Offset + 5 * 8);
            assertEquals(flushes, counter.flushes, "FLUSH went to the disk after B completed, but the L2 entry B's"
                    + " data depends on is not on disk (entry " + Long.toHexString(entry) + "): a crash loses a"
                    + " flushed write");
            assertTrue(!done.containsKey(3L), "FLUSH completed before the L2 write");
            holder.release(); // the table write completes: now the FLUSH may go
            await(d, 3L);
            assertEquals(0L, done.get(3L), "FLUSH completed");
            assertTrue(counter.flushes > flushes, "the FLUSH reached the disk");
        } finally {
            holder.release();
            d.close();
        }
    }

    /** A write into a new L2 table whose L1 entry write is still in flight. */
    @Test
    void flushAfterAWriteIntoANewL2TableWaitsForTheL1Entry(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "b.qcow2", "1G", "-o", "cluster_size=65536");
        long l1Offset = readLong(img, 40);
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        GatedBackend.Holder holder = new GatedBackend.Holder(Set.of(l1Offset)); // every L1 write
        FlushCounter counter = new FlushCounter(host.openBackend(64));
        IoBackend io = holder.wrap(counter);
        Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, 8, Qcow2Options.defaults());
        long l2Span = (long) CLUSTER * (CLUSTER / 8);
        try {
            NativeBuffer a = DriverRig.buffer(LEN);
            NativeBuffer c = DriverRig.buffer(LEN);
            a.buffer().setMemory(0, LEN, (byte) 0xaa);
            c.buffer().setMemory(0, LEN, (byte) 0xcc);
            // A: the first write under L1 index 1 creates its L2 table; the L1 write is held.
            assertEquals(0, d.write(l2Span, vec(a), 1));
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (holder.held() == 0) {
                assertTrue(System.nanoTime() < deadline, "the L1 write never came");
                drive(d, 1);
            }
            // C: another cluster under the same L1 index finds the new table in the cache and completes.
            assertEquals(0, d.write(l2Span + CLUSTER, vec(c), 2));
            await(d, 2L);
            assertEquals(LEN, done.get(2L), "C completed");
            int flushes = counter.flushes;
            assertEquals(0, d.flush(3));
            drive(d, 5);
            assertEquals(flushes, counter.flushes, "FLUSH went to the disk after C completed, but the L1 entry"
                    + " naming C's L2 table is not on disk (" + Long.toHexString(readLong(img, l1Offset + 8))
                    + "): a crash loses a flushed write");
            assertTrue(!done.containsKey(3L), "FLUSH completed before the L1 write");
            holder.release();
            await(d, 3L);
            assertEquals(0L, done.get(3L), "FLUSH completed");
            assertTrue(counter.flushes > flushes, "the FLUSH reached the disk");
        } finally {
            holder.release();
            d.close();
        }
    }
}
