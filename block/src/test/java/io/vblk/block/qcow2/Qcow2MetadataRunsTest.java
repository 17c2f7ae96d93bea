package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Random;
import java.util.TreeSet;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * The metadata cluster sets as runs ({@link ClusterSet}) and the reload at the first request.
 *
 * <ul>
 * <li>A level whose refcount table names QEMU's most refcount blocks (1 Mi, an 8 MiB table),
 * laid out one after another as QEMU's refcount areas and preallocated images lay them, held
 * them as 4 MiB of cluster numbers, every level of a chain (16 MiB for four levels, measured as
 * heap retained by the open); now a run of two numbers.</li>
 * <li>The first request reads the tables again (a migration's source may have changed them):
 * it read them into new buffers while the old ones were still held, 32 MiB more direct memory
 * for the largest L1 table; now it reads into the ones it replaces and drops the old set
 * before building the new one.</li>
 * <li>Blocks laid out apart make no runs: the backing levels' sets together are bounded by
 * {@link Qcow2Options#CHAIN_METADATA_SET_BUDGET_BYTES}, the level over it refused, named.</li>
 * <li>Lookups answer as a plain set does, and two structures in one cluster are still refused.</li>
 * </ul>
 */
class Qcow2MetadataRunsTest {
    private static final long MIB = 1 << 20;
    private static final int CLUSTER = 65536;
    private static final int BLOCKS = (int) (Qcow2Descriptor.MAX_REFTABLE_BYTES / 8);

    @TempDir
    Path dir;

    @Test
    void runsAnswerAsAPlainSet() {
        Random rnd = new Random(7);
        for (int round = 0; round < 200; round++) {
            TreeSet<Long> want = new TreeSet<>();
            long[] singles = new long[rnd.nextInt(60)];
            for (int i = 0; i < singles.length; i++) {
                singles[i] = rnd.nextInt(300);
                want.add(singles[i]);
            }
            ClusterSet.Builder b = new ClusterSet.Builder(16, (round % 2 == 0 ? 400L : 1L << 47) << 16, singles.length, false);
            for (long s : singles) {
                b.add(s);
            }
            for (int r = rnd.nextInt(5); r > 0; r--) {
                long from = rnd.nextInt(300);
                long to = from + rnd.nextInt(20);
                b.addClusters(from, to);
                for (long c = from; c < to; c++) {
                    want.add(c);
                }
            }
            ClusterSet set = b.build();
            assertEquals(want.size(), set.size(), "round " + round);
            assertEquals(want.isEmpty() ? -1 : want.last(), set.last(), "round " + round);
            for (long c = -2; c < 330; c++) {
                assertEquals(want.contains(c), set.contains(c), "round " + round + ", cluster " + c);
            }
            assertTrue(set.heapBytes() <= (round % 2 == 0 ? 4 : 8) * (long) want.size(), "never over one index a cluster");
        }
    }

    @Test
    void twoStructuresInOneClusterAreRefused() {
        ClusterSet.Builder b = new ClusterSet.Builder(16, 100L << 16, 2, true);
        b.addClusters(10, 20);
        b.add(30);
        b.add(19);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, b::build);
        assertTrue(e.getMessage().contains("overlap at cluster offset " + (19L << 16)), e.getMessage());
        ClusterSet.Builder touching = new ClusterSet.Builder(16, 100L << 16, 2, true);
        touching.addClusters(10, 20);
        touching.add(20);
        touching.add(9);
        ClusterSet set = touching.build();
        assertEquals(12, set.size());
        assertEquals(1, set.runs());
        assertEquals(8, set.heapBytes(), "one run: its first and last cluster");
    }

    /**
     * Moves the refcount table to the file's end as QEMU's largest (8 MiB, 1 Mi entries): entry 0
     * keeps the image's refcount block, the others name blocks one after another past the table
     * (a sparse stretch of zeros, as far as the file is concerned blocks of zero refcounts).
     */
    private static void contiguousRefcountBlocks(Path p) throws IOException {
        refcountBlocks(p, 1);
    }

    /** The 8 MiB refcount table naming blocks {@code spacing} clusters apart, past the table. */
    private static void refcountBlocks(Path p, int spacing) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            long old = ch.map(FileChannel.MapMode.READ_ONLY, Qcow2Descriptor.REFCOUNT_TABLE_OFFSET_OFFSET, 8).getLong();
            ByteBuffer first = ByteBuffer.allocate(8);
            ch.read(first, old);
            long at = Qcow2Image.roundUp(ch.size(), CLUSTER);
            long blocks = at + Qcow2Descriptor.MAX_REFTABLE_BYTES;
            ByteBuffer table = ByteBuffer.allocate((int) Qcow2Descriptor.MAX_REFTABLE_BYTES);
            table.putLong(first.getLong(0));
            for (int i = 1; i < BLOCKS; i++) {
                table.putLong(blocks + (long) (i - 1) * spacing * CLUSTER);
            }
            ch.write(table.flip(), at);
            ch.write(ByteBuffer.allocate(1), blocks + (long) BLOCKS * spacing * CLUSTER - 1);
            ch.write(ByteBuffer.allocate(4).putInt(0, (int) (Qcow2Descriptor.MAX_REFTABLE_BYTES / CLUSTER)),
                    Qcow2Descriptor.REFCOUNT_TABLE_CLUSTERS_OFFSET);
            ch.write(ByteBuffer.allocate(8).putLong(0, at), Qcow2Descriptor.REFCOUNT_TABLE_OFFSET_OFFSET);
        }
    }

    /** As {@link #contiguousRefcountBlocks}, the blocks every other cluster: no two make a run. */
    private static void scatteredRefcountBlocks(Path p) throws IOException {
        refcountBlocks(p, 2);
    }

    @Test
    void scatteredRefcountBlocksCountAgainstTheChainsBudget() throws Exception {
        int levels = 11;
        Path below = null;
        for (int i = 0; i < levels; i++) {
            String name = "l" + i + ".qcow2";
            Path p = below == null ? DriverRig.create(dir, name, "64M")
                    : DriverRig.create(dir, name, "64M", "-b", below.getFileName().toString(), "-F", "qcow2");
            var r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P " + (i + 1) + " " + (long) i * CLUSTER + " 4k",
                    p.toString());
            assertEquals(0, r.code(), r.output());
            scatteredRefcountBlocks(p);
            below = p;
        }
        // Each backing level's set takes a little over 4 MiB: nine fit in the 40 MiB, the tenth
        // (l0 under the top l10) is refused, named. Were all opened: 4 MiB a level, 68 MiB for 17.
        Path top = below;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(top, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true)).close());
        String base = dir.resolve("l0.qcow2").toRealPath().toString();
        assertTrue(e.getMessage().contains(base) && e.getMessage().contains("CHAIN_METADATA_SET_BUDGET_BYTES"),
                e.getMessage());
        // The chain under l9 (nine backing levels) is within the budget: it opens and reads.
        try (Qcow2Driver d = Qcow2.open(dir.resolve("l9.qcow2"), BackendKind.IO_URING, 8,
                Qcow2Options.defaults().readOnly(true))) {
            long sets = 0;
            for (Qcow2Driver q = d; q != null; q = q.backing() instanceof Qcow2Driver b ? b : null) {
                sets += q == d ? 0 : q.metadata().metadataClusters().heapBytes();
            }
            assertTrue(sets <= Qcow2Options.CHAIN_METADATA_SET_BUDGET_BYTES, sets + " bytes of backing sets");
            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(4096);
            for (int i = 0; i < levels - 1; i++) {
                DriverRig.poison(buf);
                assertEquals(4096, rig.one(rig.read((long) i * CLUSTER, buf, 4096)), "read of cluster " + i);
                byte[] want = new byte[4096];
                Arrays.fill(want, (byte) (i + 1));
                assertArrayEquals(want, DriverRig.bytes(buf, 4096), "cluster " + i + " read through the chain");
            }
        }
    }

    @Test
    void contiguousRefcountBlocksTakeOneRunPerLevel() throws Exception {
        int levels = 4;
        Path below = null;
        for (int i = 0; i < levels; i++) {
            String name = "l" + i + ".qcow2";
            Path p = below == null ? DriverRig.create(dir, name, "64M")
                    : DriverRig.create(dir, name, "64M", "-b", below.getFileName().toString(), "-F", "qcow2");
            var r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P " + (i + 1) + " " + (long) i * CLUSTER + " 4k",
                    p.toString());
            assertEquals(0, r.code(), r.output());
            contiguousRefcountBlocks(p);
            below = p;
        }
        long before = settledHeap();
        try (Qcow2Driver d = Qcow2.open(below, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            long retained = settledHeap() - before;
            System.out.println("Qcow2MetadataRunsTest: " + levels + " levels of 1 Mi refcount blocks retain " + retained
                    + " bytes of heap");
            // Was 4 MiB a level (one int per block); the rest of a driver is small.
            assertTrue(retained < 4 * MIB, levels + " levels retained " + retained / MIB + " MiB of heap");
            NativeBuffer buf = DriverRig.buffer(4096);
            DriverRig rig = new DriverRig(d);
            int seen = 0;
            for (Qcow2Driver q = d; q != null; q = q.backing() instanceof Qcow2Driver b ? b : null) {
                ClusterSet own = q.metadata().metadataClusters();
                assertTrue(own.size() >= BLOCKS, "every block is metadata");
                assertTrue(own.heapBytes() < 1024, own.heapBytes() + " bytes of cluster set");
                seen++;
            }
            assertEquals(levels, seen);
            for (int i = 0; i < levels; i++) {
                DriverRig.poison(buf);
                assertEquals(4096, rig.one(rig.read((long) i * CLUSTER, buf, 4096)), "read of cluster " + i);
                byte[] want = new byte[4096];
                Arrays.fill(want, (byte) (i + 1));
                assertArrayEquals(want, DriverRig.bytes(buf, 4096), "cluster " + i + " read through the chain");
            }
            long afterReads = settledHeap() - before;
            assertTrue(afterReads < 4 * MIB, "after every level's first request " + afterReads / MIB + " MiB retained");
        }
    }

    @Test
    void theFirstRequestReadsTheTablesIntoTheOnesItReplaces() throws Exception {
        Path p = DriverRig.create(dir, "big.qcow2", "64M");
        var r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 5 0 4k", p.toString());
        assertEquals(0, r.code(), r.output());
        Qcow2ChainTableMemoryTest.largestL1(p, CLUSTER);
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            NativeBuffer l1 = d.metadata().l1;
            NativeBuffer reftable = d.metadata().reftable;
            NativeBuffer buf = DriverRig.buffer(4096);
            long before = Qcow2HostileImagePropertyTest.directBytes();
            DriverRig rig = new DriverRig(d);
            assertEquals(4096, rig.one(rig.read(0, buf, 4096)));
            long reload = Qcow2HostileImagePropertyTest.directBytes() - before;
            System.out.println("Qcow2MetadataRunsTest: the first request's reload took " + reload + " bytes of direct memory");
            byte[] want = new byte[4096];
            Arrays.fill(want, (byte) 5);
            assertArrayEquals(want, DriverRig.bytes(buf, 4096));
            // A first cluster and the back end's odds and ends; was 32 MiB more (a second L1 table).
            assertTrue(reload < 4 * MIB, "the reload took " + reload / MIB + " MiB of direct memory");
            assertTrue(d.metadata().l1 == l1 && d.metadata().reftable == reftable, "the tables were read into again");
        }
    }

    /**
     * An activation (a migration's destination at its device's start, or a source taking its
     * image back) reads the tables afresh, as the first request does: it read them into new
     * buffers while the ones read at the inactive open were still held, 32 MiB more direct
     * memory for the largest L1 table (35.8 MB measured, now 2.2 MB); now it reads into the ones it replaces.
     */
    @Test
    void anActivationReadsTheTablesIntoTheOnesItReplaces() throws Exception {
        Path p = DriverRig.create(dir, "big.qcow2", "64M");
        var r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 5 0 4k", p.toString());
        assertEquals(0, r.code(), r.output());
        Qcow2ChainTableMemoryTest.largestL1(p, CLUSTER);
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().incoming(true))) {
            assertFalse(d.active());
            NativeBuffer l1 = d.metadata().l1;
            NativeBuffer reftable = d.metadata().reftable;
            long before = Qcow2HostileImagePropertyTest.directBytes();
            assertTrue(d.activate());
            long activation = Qcow2HostileImagePropertyTest.directBytes() - before;
            System.out.println("Qcow2MetadataRunsTest: the activation took " + activation + " bytes of direct memory");
            assertTrue(activation < 4 * MIB, "the activation took " + activation / MIB + " MiB of direct memory");
            assertTrue(d.metadata().l1 == l1 && d.metadata().reftable == reftable, "the tables were read into again");
            NativeBuffer buf = DriverRig.buffer(4096);
            DriverRig rig = new DriverRig(d);
            assertEquals(4096, rig.one(rig.read(0, buf, 4096)));
            byte[] want = new byte[4096];
            Arrays.fill(want, (byte) 5);
            assertArrayEquals(want, DriverRig.bytes(buf, 4096));
        }
    }

    /** Heap in use once collections settle. */
    private static long settledHeap() throws InterruptedException {
        long last = -1;
        for (int i = 0; i < 5; i++) {
            System.gc();
            Thread.sleep(20);
            last = ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed();
        }
        return last;
    }
}
