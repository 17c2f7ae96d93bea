package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.block.BlockDriver;
import io.vblk.sys.NativeBuffer;

/**
 * The tables an open keeps for a backing chain, where each image chooses their sizes: an L1 table
 * may be 32 MiB (QEMU's limit) and a refcount table 8 MiB, in every one of 17 levels.
 *
 * <ul>
 * <li>L1 tables: the top image's is its own; the backing levels' together may take
 * {@link Qcow2Options#CHAIN_L1_BUDGET_BYTES}. 17 levels of 32 MiB L1 tables (sparse files) were
 * opened with 544 MiB of direct memory; now the level that goes over the budget is refused,
 * named, and a chain within it opens and reads.</li>
 * <li>Refcount tables: a read-only level never allocates, so it keeps none. 17 levels of 8 MiB
 * refcount tables kept 136 MiB; now only the writable top's 8 MiB is kept.</li>
 * </ul>
 */
class Qcow2ChainTableMemoryTest {
    private static final int LEVELS = Qcow2Options.DEFAULT_MAX_BACKING_DEPTH + 1;
    private static final long MIB = 1 << 20;
    private static final int L1_ENTRIES = (int) (Qcow2Descriptor.MAX_L1_BYTES / 8);

    @TempDir
    Path dir;

    /**
     * A chain of {@code levels} images of {@code cluster}-byte clusters (l0 the base), level i
     * with byte i + 1 in 4 KiB of its cluster i; {@code hostile} edits each file's header after.
     */
    private Path chain(int levels, int cluster, Edit hostile) throws Exception {
        Path below = null;
        for (int i = 0; i < levels; i++) {
            String name = "l" + i + ".qcow2";
            Path p = below == null
                    ? DriverRig.create(dir, name, "64M", "-o", "cluster_size=" + cluster)
                    : DriverRig.create(dir, name, "64M", "-o", "cluster_size=" + cluster, "-b", below.getFileName().toString(),
                            "-F", "qcow2");
            var r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P " + (i + 1) + " " + (long) i * cluster + " 4k",
                    p.toString());
            assertEquals(0, r.code(), r.output());
            hostile.apply(p, cluster);
            below = p;
        }
        return below;
    }

    @FunctionalInterface
    interface Edit {
        void apply(Path p, int cluster) throws IOException;
    }

    /** Moves the L1 table to the file's end and makes it QEMU's largest, 32 MiB (a sparse stretch). */
    static void largestL1(Path p, int cluster) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            long old = ch.map(FileChannel.MapMode.READ_ONLY, Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET, 8).getLong();
            ByteBuffer first = ByteBuffer.allocate(8);
            ch.read(first, old);
            long at = Qcow2Image.roundUp(ch.size(), cluster);
            ch.write(first.flip(), at);
            ch.write(ByteBuffer.allocate(1), at + Qcow2Descriptor.MAX_L1_BYTES - 1);
            ch.write(ByteBuffer.allocate(4).putInt(0, L1_ENTRIES), Qcow2Descriptor.L1_SIZE_OFFSET);
            ch.write(ByteBuffer.allocate(8).putLong(0, at), Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET);
        }
    }

    /** Moves the refcount table to the file's end and makes it QEMU's largest, 8 MiB (sparse). */
    private static void largestRefcountTable(Path p, int cluster) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            long old = ch.map(FileChannel.MapMode.READ_ONLY, Qcow2Descriptor.REFCOUNT_TABLE_OFFSET_OFFSET, 8).getLong();
            ByteBuffer entries = ByteBuffer.allocate(4096);
            ch.read(entries, old);
            long at = Qcow2Image.roundUp(ch.size(), cluster);
            ch.write(entries.flip(), at);
            ch.write(ByteBuffer.allocate(1), at + Qcow2Descriptor.MAX_REFTABLE_BYTES - 1);
            ch.write(ByteBuffer.allocate(4).putInt(0, (int) (Qcow2Descriptor.MAX_REFTABLE_BYTES / cluster)),
                    Qcow2Descriptor.REFCOUNT_TABLE_CLUSTERS_OFFSET);
            ch.write(ByteBuffer.allocate(8).putLong(0, at), Qcow2Descriptor.REFCOUNT_TABLE_OFFSET_OFFSET);
        }
    }

    @Test
    void backingL1TablesOverTheBudgetAreRefusedNamingTheImage() throws Exception {
        Path top = chain(LEVELS, 65536, Qcow2ChainTableMemoryTest::largestL1);
        long before = settledDirectBytes();
        try {
            Qcow2Driver d = Qcow2.open(top, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true));
            long opened = Qcow2HostileImagePropertyTest.directBytes() - before;
            d.close();
            fail(LEVELS + " levels of 32 MiB L1 tables opened, taking " + opened / MIB + " MiB of direct memory");
        } catch (IllegalArgumentException e) {
            // The top's is its own; two backing levels take the 64 MiB; the third is refused.
            String third = dir.resolve("l" + (LEVELS - 4) + ".qcow2").toRealPath().toString();
            assertTrue(e.getMessage().contains(third) && e.getMessage().contains("CHAIN_L1_BUDGET_BYTES"), e.getMessage());
        }
    }

    @Test
    void backingL1TablesWithinTheBudgetOpenAndRead() throws Exception {
        int cluster = 65536;
        Path top = chain(3, cluster, Qcow2ChainTableMemoryTest::largestL1);
        long before = settledDirectBytes();
        try (Qcow2Driver d = Qcow2.open(top, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            long opened = Qcow2HostileImagePropertyTest.directBytes() - before;
            System.out.println("Qcow2ChainTableMemoryTest: 3 levels of 32 MiB L1 tables took " + opened / MIB + " MiB direct");
            // The three L1 tables and, per level, a first cluster, a 64 KiB window, the back end's rings.
            assertTrue(opened <= 3 * Qcow2Descriptor.MAX_L1_BYTES + 8 * MIB, "the open took " + opened / MIB + " MiB");
            readEveryLevel(d, 3, cluster);
        }
    }

    @Test
    void readOnlyLevelsKeepNoRefcountTable() throws Exception {
        int cluster = 2 << 20;
        Path top = chain(LEVELS, cluster, Qcow2ChainTableMemoryTest::largestRefcountTable);
        long before = settledDirectBytes();
        try (Qcow2Driver d = Qcow2.open(top, BackendKind.IO_URING, 32, Qcow2Options.defaults())) {
            long opened = Qcow2HostileImagePropertyTest.directBytes() - before;
            System.out.println("Qcow2ChainTableMemoryTest: " + LEVELS + " levels of 8 MiB refcount tables took " + opened / MIB
                    + " MiB direct");
            // Per level the first cluster read at open (garbage by now, maybe not yet freed), a
            // 64 KiB window and a small L1 table; the writable top's refcount table and block;
            // and the L2 cache and first bounce buffers every level takes at open (rev15a).
            long cacheAndBounce = 0;
            for (BlockDriver level = d; level instanceof Qcow2Driver; level = ((Qcow2Driver) level).backing()) {
                Qcow2Driver q = (Qcow2Driver) level;
                cacheAndBounce += (long) q.l2Cache()[1] * cluster + q.bounceBuffers() * (3L * cluster + 2 * 4096);
            }
            long bound = LEVELS * (cluster + MIB) + Qcow2Descriptor.MAX_REFTABLE_BYTES + cluster + 4 * MIB
                    + cacheAndBounce;
            assertTrue(opened <= bound, "the open took " + opened / MIB + " MiB of direct memory, over " + bound / MIB);
            readEveryLevel(d, LEVELS, cluster);
        }
    }

    /**
     * Direct memory once the garbage of building the chain is freed (a direct buffer is freed by
     * its cleaner after a collection, not at once), so that the open's figure is the open's.
     */
    static long settledDirectBytes() throws InterruptedException {
        long last = -1;
        int same = 0;
        for (int i = 0; i < 40 && same < 2; i++) {
            System.gc();
            Thread.sleep(50);
            long now = Qcow2HostileImagePropertyTest.directBytes();
            same = now == last ? same + 1 : 0;
            last = now;
        }
        return last;
    }

    /** Reads cluster i (byte i + 1 in its first 4 KiB) from the top for every level i. */
    private static void readEveryLevel(Qcow2Driver d, int levels, int cluster) {
        DriverRig rig = new DriverRig(d);
        NativeBuffer buf = DriverRig.buffer(8192);
        for (int i = 0; i < levels; i++) {
            DriverRig.poison(buf);
            assertEquals(8192, rig.one(rig.read((long) i * cluster, buf, 8192)), "read of cluster " + i);
            byte[] want = new byte[8192];
            Arrays.fill(want, 0, 4096, (byte) (i + 1));
            assertArrayEquals(want, DriverRig.bytes(buf, 8192), "cluster " + i + " read through the chain");
        }
    }
}
