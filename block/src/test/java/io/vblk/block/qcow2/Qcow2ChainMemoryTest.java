package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * The deepest chain the defaults follow (16 backing levels of 2 MiB-cluster images, the
 * cluster size and depth a tenant's image chooses) opens within a bound: each level takes the
 * L2 tables its size can use (at most its share of the cache) and one bounce buffer, where
 * every level used to take its whole cache (32 tables of 2 MiB, 64 MiB a level, 1.1 GiB in all).
 * Reads through every level return each level's data, and the memory they take stays within a
 * backing level's share of the cache.
 */
class Qcow2ChainMemoryTest {
    private static final int LEVELS = Qcow2Options.DEFAULT_MAX_BACKING_DEPTH + 1;
    private static final int CLUSTER = 2 << 20;
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    @Test
    void deepChainOfLargeClustersOpensWithinTheBudget() throws Exception {
        // Level i (0 the base, LEVELS - 1 the top) writes byte i + 1 over 4 KiB of cluster i:
        // reading cluster i from the top must go down to level i.
        Path below = null;
        Path top = null;
        for (int i = 0; i < LEVELS; i++) {
            String name = "l" + i + ".qcow2";
            top = below == null
                    ? DriverRig.create(dir, name, "64M", "-o", "cluster_size=" + CLUSTER)
                    : DriverRig.create(dir, name, "64M", "-o", "cluster_size=" + CLUSTER, "-b", below.getFileName().toString(),
                            "-F", "qcow2");
            var r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P " + (i + 1) + " " + (long) i * CLUSTER + " 4k",
                    top.toString());
            assertEquals(0, r.code(), r.output());
            below = top;
        }
        System.gc();
        long before = Qcow2HostileImagePropertyTest.directBytes();
        try (Qcow2Driver d = Qcow2.open(top, BackendKind.IO_URING, 32, Qcow2Options.defaults())) {
            long opened = Qcow2HostileImagePropertyTest.directBytes() - before;
            System.out.println("Qcow2ChainMemoryTest: open of " + LEVELS + " levels took " + opened / MIB + " MiB direct");
            // Per level 7 clusters: the first cluster read at open (garbage by now, but freed
            // only when a GC has run its cleaner: counted, as a CI run found it still held), the
            // L1 table, its L2 cache (2 tables: one maps all 64 MiB) and one bounce buffer (3
            // clusters), all taken at open so that the disk never needs direct memory later
            // (rev15a); the top a second bounce buffer, its refcount table (a cluster) and block.
            // (Read-only levels kept their refcount tables: 71 MiB. Whole caches: 1.1 GiB.)
            assertTrue(opened <= LEVELS * 7L * CLUSTER + 3L * CLUSTER + 4 * MIB, "the open took " + opened / MIB
                    + " MiB of direct memory");
            assertEquals(16, d.files().size() - 1, "every backing level is open");

            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(8192);
            for (int i = 0; i < LEVELS; i++) {
                DriverRig.poison(buf);
                assertEquals(8192, rig.one(rig.read((long) i * CLUSTER, buf, 8192)), "read of cluster " + i);
                byte[] want = new byte[8192];
                Arrays.fill(want, 0, 4096, (byte) (i + 1));
                assertArrayEquals(want, DriverRig.bytes(buf, 8192), "cluster " + i + " read through the chain");
            }
            long used = Qcow2HostileImagePropertyTest.directBytes() - before;
            System.out.println("Qcow2ChainMemoryTest: after reads through every level " + used / MIB + " MiB direct");
            // Each level read its metadata again at its first request (a first cluster, the old
            // one garbage not yet freed; the tables into the ones they replace) and loaded one L2 table (one
            // maps all 64 MiB): a cache filled in full would take 32 tables a level.
            assertTrue(used - opened <= LEVELS * 3L * CLUSTER + 4 * MIB, "reads took " + (used - opened) / MIB + " MiB");
        }
    }

    /**
     * A backing level's cache is its small share, whatever the top's setting: a 2 TiB base of
     * 2 MiB clusters read through four L2 tables keeps at most two of them (1 MiB' worth, at
     * least 2), a 64 KiB-cluster level gets 16; the top keeps its 32, all allocated at open.
     */
    @Test
    void backingLevelsCacheTheirShareOnly() throws Exception {
        long span = 512L << 30; // what one L2 table of 2 MiB clusters maps
        Path base = DriverRig.create(dir, "base.qcow2", "2T", "-o", "cluster_size=" + CLUSTER);
        for (int t = 0; t < 4; t++) {
            var r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P " + (t + 1) + " " + t * span + " 4k",
                    base.toString());
            assertEquals(0, r.code(), r.output());
        }
        Path mid = DriverRig.create(dir, "mid.qcow2", "2T", "-o", "cluster_size=65536", "-b", "base.qcow2", "-F", "qcow2");
        Path top = DriverRig.create(dir, "top.qcow2", "2T", "-o", "cluster_size=65536", "-b", "mid.qcow2", "-F", "qcow2");
        try (Qcow2Driver d = Qcow2.open(top, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            Qcow2Driver m = (Qcow2Driver) d.backing();
            Qcow2Driver b = (Qcow2Driver) m.backing();
            // Allocated at open (rev15a: a disk serving must not need direct memory later).
            assertArrayEquals(new int[] {32, 32}, d.l2Cache(), "the top's whole cache");
            assertArrayEquals(new int[] {16, 16}, m.l2Cache(), "1 MiB of 64 KiB tables");
            assertArrayEquals(new int[] {2, 2}, b.l2Cache(), "at least 2 tables of 2 MiB");
            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(4096);
            for (int round = 0; round < 2; round++) {
                for (int t = 0; t < 4; t++) {
                    DriverRig.poison(buf);
                    assertEquals(4096, rig.one(rig.read(t * span, buf, 4096)));
                    byte[] want = new byte[4096];
                    Arrays.fill(want, (byte) (t + 1));
                    assertArrayEquals(want, DriverRig.bytes(buf, 4096), "table " + t + ", round " + round);
                }
            }
            assertArrayEquals(new int[] {2, 2}, b.l2Cache(), "the base's four tables went through two slots");
        }
    }
}
