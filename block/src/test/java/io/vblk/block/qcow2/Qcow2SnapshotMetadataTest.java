package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.BackendKind;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * An image's internal snapshots are metadata too: the snapshot table, each snapshot's L1 table
 * and the L2 tables those name. An active L2 entry (of the top image or of a backing level)
 * aimed at one of them used to be served as data, so a guest read returned the snapshot's
 * tables; now the table's first load finds the entry pointing into metadata, marks the image
 * corrupt and the read fails with EIO. Hostile snapshot counts and L1 sizes are refused at
 * open from the snapshot table alone, before any snapshot L1 table is read.
 */
class Qcow2SnapshotMetadataTest {
    private static final int CLUSTER = 64 << 10;

    @TempDir
    Path dir;

    /** The snapshot table, the snapshot's L1 table, and the L2 table only the snapshot names. */
    enum Target { TABLE, SNAPSHOT_L1, SNAPSHOT_L2 }

    /**
     * 1 MiB of 64 KiB clusters: data (byte 1) in clusters 0..2, snapshot s1, then a write to
     * cluster 1 (byte 2), which gives the active state an L2 table of its own: the old one is
     * the snapshot's alone.
     */
    private Path snapshotImage(String name) throws Exception {
        Path p = DriverRig.create(dir, name, "1M", "-o", "compat=1.1,cluster_size=" + CLUSTER);
        assertEquals(0, DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 192k", p.toString()).code());
        DriverRig.qemuImg("snapshot", "-c", "s1", p.toString());
        assertEquals(0, DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 2 64k 4k", p.toString()).code());
        return p;
    }

    /** Where {@code target} lies in {@code p}, read from its header and snapshot table. */
    private static long offsetOf(Path p, Target target) throws IOException {
        long snapshots = getLong(p, Qcow2Descriptor.SNAPSHOTS_OFFSET_OFFSET);
        long snapshotL1 = getLong(p, snapshots);
        switch (target) {
            case TABLE:
                return snapshots;
            case SNAPSHOT_L1:
                return snapshotL1;
            default:
                long snapshotL2 = getLong(p, snapshotL1) & Qcow2Descriptor.L1E_OFFSET_MASK;
                assertNotEquals(activeL2(p), snapshotL2, "the write after the snapshot copied the L2 table");
                return snapshotL2;
        }
    }

    private static long activeL2(Path p) throws IOException {
        return getLong(p, getLong(p, Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET)) & Qcow2Descriptor.L1E_OFFSET_MASK;
    }

    /** Points the active L2 entry of guest cluster 0 at {@code target}. */
    private static void aimClusterZeroAt(Path p, Target target) throws IOException {
        putLong(p, activeL2(p), offsetOf(p, target) | Qcow2Descriptor.OFLAG_COPIED);
    }

    @ParameterizedTest
    @ValueSource(strings = {"TABLE", "SNAPSHOT_L1", "SNAPSHOT_L2"})
    void anActiveEntryIntoASnapshotsTablesFailsTheRead(String target) throws Exception {
        Path p = snapshotImage("snap.qcow2");
        aimClusterZeroAt(p, Target.valueOf(target));
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            assertEquals(-Errno.EIO, readClusterZero(d), "the read returned the snapshot's " + target);
            assertNotNull(d.corruptReason());
            assertTrue(d.corruptReason().contains("metadata"), d.corruptReason());
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"TABLE", "SNAPSHOT_L1", "SNAPSHOT_L2"})
    void aBackingLevelsEntryIntoItsSnapshotsTablesFailsTheRead(String target) throws Exception {
        Path base = snapshotImage("base.qcow2");
        aimClusterZeroAt(base, Target.valueOf(target));
        Path top = DriverRig.create(dir, "top.qcow2", "1M", "-o", "cluster_size=4096", "-b", "base.qcow2", "-F", "qcow2");
        try (Qcow2Driver d = Qcow2.open(top, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            assertEquals(-Errno.EIO, readClusterZero(d), "the read through the top returned the base's snapshot " + target);
        }
    }

    /**
     * The active L1 entry aimed at the snapshot's L1 table, read as an L2 table: its entries
     * name the snapshot's L2 tables, which a read returned as data.
     * {@link Qcow2HostileImagePropertyTest} found it ({@code snap ro seed -416}: {@code L1[0]} set
     * to the snapshot's L1 table) once its mutations aimed at snapshots' tables.
     */
    @Test
    void anActiveL1EntryAtTheSnapshotsL1TableFailsTheRead() throws Exception {
        Path p = snapshotImage("snap.qcow2");
        putLong(p, getLong(p, Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET),
                offsetOf(p, Target.SNAPSHOT_L1) | Qcow2Descriptor.OFLAG_COPIED);
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            assertEquals(-Errno.EIO, readClusterZero(d), "the read returned the snapshot's L2 table");
        }
    }

    /** The sound image reads as QEMU wrote it: the snapshot's tables are no obstacle. */
    @Test
    void aSoundImageWithASnapshotReadsItsData() throws Exception {
        Path p = snapshotImage("snap.qcow2");
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(3 * CLUSTER);
            assertEquals(3 * CLUSTER, rig.one(rig.read(0, buf, 3 * CLUSTER)));
            byte[] want = new byte[3 * CLUSTER];
            Arrays.fill(want, (byte) 1);
            Arrays.fill(want, CLUSTER, CLUSTER + 4096, (byte) 2);
            assertArrayEquals(want, DriverRig.bytes(buf, 3 * CLUSTER));
        }
    }

    /**
     * Two snapshots sharing L2 tables with each other and with the active state (512-byte
     * clusters: an L2 table maps 32 KiB, so 64 KiB of data takes two, and the write after the
     * second snapshot copies only the first): a table named twice is no overlap, the image opens
     * and reads as QEMU wrote it.
     */
    @Test
    void snapshotsSharingL2TablesWithTheActiveStateOpenAndRead() throws Exception {
        Path p = DriverRig.create(dir, "shared.qcow2", "1M", "-o", "compat=1.1,cluster_size=512");
        assertEquals(0, DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", p.toString()).code());
        DriverRig.qemuImg("snapshot", "-c", "s1", p.toString());
        DriverRig.qemuImg("snapshot", "-c", "s2", p.toString());
        assertEquals(0, DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 2 0 4k", p.toString()).code());
        long activeSecond = getLong(p, getLong(p, Qcow2Descriptor.L1_TABLE_OFFSET_OFFSET) + 8);
        long snapshotSecond = getLong(p, getLong(p, getLong(p, Qcow2Descriptor.SNAPSHOTS_OFFSET_OFFSET)) + 8);
        assertEquals(activeSecond & Qcow2Descriptor.L1E_OFFSET_MASK, snapshotSecond & Qcow2Descriptor.L1E_OFFSET_MASK,
                "the second L2 table is shared");
        try (Qcow2Driver d = Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(64 << 10);
            assertEquals(64 << 10, rig.one(rig.read(0, buf, 64 << 10)));
            byte[] want = new byte[64 << 10];
            Arrays.fill(want, (byte) 1);
            Arrays.fill(want, 0, 4096, (byte) 2);
            assertArrayEquals(want, DriverRig.bytes(buf, 64 << 10));
        }
    }

    /**
     * 65536 snapshots (QEMU's most), each naming a 32 MiB L1 table (QEMU's largest): 2 TiB of
     * L1 tables, all in one 32 MiB stretch of a sparse file. Refused from the table, before any
     * is read, with the budget named; the open's direct memory stays small.
     */
    @Test
    void snapshotsWhoseL1TablesAreOverTheBudgetAreRefusedBeforeReadingThem() throws Exception {
        Path p = DriverRig.create(dir, "many.qcow2", "1M", "-o", "compat=1.1,cluster_size=" + CLUSTER);
        long l1 = 16L * CLUSTER;
        long table = l1 + (32L << 20);
        int n = 65536;
        ByteBuffer entries = ByteBuffer.allocate(n * 40);
        for (int i = 0; i < n; i++) {
            entries.putLong(i * 40, l1).putInt(i * 40 + 8, 4 << 20);
        }
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(entries, table);
        }
        putInt(p, Qcow2Descriptor.NB_SNAPSHOTS_OFFSET, n);
        putLong(p, Qcow2Descriptor.SNAPSHOTS_OFFSET_OFFSET, table);
        long before = Qcow2HostileImagePropertyTest.directBytes();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true)).close());
        assertTrue(e.getMessage().contains("CHAIN_L1_BUDGET_BYTES") && e.getMessage().contains(p.toRealPath().toString()),
                e.getMessage());
        long grown = Qcow2HostileImagePropertyTest.directBytes() - before;
        assertTrue(grown < (4 << 20), "the refused open took " + grown + " bytes of direct memory");
    }

    /**
     * 65536 snapshots in a table whose first entry lies in the file's last cluster and the rest
     * past its end: refused, naming the table. Was accepted (the table was never read).
     */
    @Test
    void aSnapshotTablePastTheEndIsRefused() throws Exception {
        Path p = DriverRig.create(dir, "short.qcow2", "1M", "-o", "compat=1.1,cluster_size=" + CLUSTER);
        long table;
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            table = Qcow2Image.roundUp(ch.size(), CLUSTER);
            ch.write(ByteBuffer.allocate(CLUSTER), table); // one cluster of zeros: entries with no L1 table
        }
        putInt(p, Qcow2Descriptor.NB_SNAPSHOTS_OFFSET, 65536);
        putLong(p, Qcow2Descriptor.SNAPSHOTS_OFFSET_OFFSET, table);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true)).close());
        assertTrue(e.getMessage().contains("snapshot table"), e.getMessage());
    }

    private static long readClusterZero(Qcow2Driver d) {
        DriverRig rig = new DriverRig(d);
        NativeBuffer buf = DriverRig.buffer(4096);
        return rig.one(rig.read(0, buf, 4096));
    }

    private static long getLong(Path p, long offset) throws IOException {
        return Qcow2HostileImageRegressionTest.getLong(p, offset);
    }

    private static void putLong(Path p, long offset, long v) throws IOException {
        Qcow2HostileImageRegressionTest.putLong(p, offset, v);
    }

    private static void putInt(Path p, long offset, int v) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(4).putInt(0, v), offset);
        }
    }
}
