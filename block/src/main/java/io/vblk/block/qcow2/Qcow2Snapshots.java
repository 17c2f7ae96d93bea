package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.io.IOException;

/**
 * What a reader of an image's active state must know of its internal snapshots: the clusters
 * that hold the snapshot table, the snapshots' L1 tables and the L2 tables those name, all of
 * it metadata no L2 entry of the active state may point a guest read into (QEMU's overlap
 * checks count the snapshot table and the inactive L1 tables too). The snapshots themselves are
 * never served; images with snapshots are served read-only.
 *
 * <p>Read once at open through a {@link TableReader} and bounded before anything is read by a
 * header or table field: the table by QEMU's limits (65536 entries, 64 MiB, at most 1 KiB of
 * extra data each; {@code qcow2_read_snapshots}), each snapshot's L1 table by QEMU's 32 MiB and
 * the file, and all of them together by what the chain's budget has left
 * ({@link Qcow2Options#CHAIN_L1_BUDGET_BYTES}), checked from the table before the first L1 table
 * is read. Only the clusters are kept, as runs ({@link ClusterSet}: the table and each L1 table
 * one run, the L2 tables a snapshot shares with the active state or another snapshot once),
 * collected in one array sized once from the table before the first L1 table is read: at most
 * {@link #MAX_SET_ENTRIES} indexes, {@link #MAX_HEAP_BYTES} of heap (twice that for files of
 * 2^31 clusters or more, whose indexes need longs). A misaligned L2 or
 * L1 table offset is refused, as QEMU refuses it ({@code qcow2_check_refcounts}: "not cluster
 * aligned", and {@code qcow2_validate_table} for the L1 tables, whatever their size).
 *
 * <p>Kept with the image and taken over by the metadata read again at the first request when
 * the header still names the same table ({@link #sameTable}): no one changes the snapshots of an
 * image in use (a writable image with snapshots is refused; a read-only level holds a shared
 * lock), so that reload does not repeat the scan (up to 64 MiB of L1 tables) on the I/O thread.
 */
final class Qcow2Snapshots {
    /** QEMU's QCOW_MAX_SNAPSHOTS_SIZE: the snapshot table's bytes. */
    static final long MAX_TABLE_BYTES = 64L << 20;
    /** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA. */
    static final int MAX_EXTRA_DATA = 1024;
    /** QEMU's QCOW_MAX_SNAPSHOTS (the header's check). */
    static final int MAX_SNAPSHOTS = 65536;
    /**
     * The most single cluster indexes a scan may collect: one per L1 entry of the chain's budget
     * (the snapshot table and the L1 tables are ranges, {@link ClusterSet.Builder#addBytes}).
     */
    static final long MAX_SET_ENTRIES = Qcow2Options.CHAIN_L1_BUDGET_BYTES / 8;
    /**
     * The heap of the scan's array of single indexes at most (ints), about 32 MiB, garbage once
     * the set is built; the set it leaves (runs, {@link ClusterSet}) takes at most as much, and
     * two indexes per snapshot beyond it (its table's and its L1 table's runs).
     */
    static final long MAX_HEAP_BYTES = 4 * MAX_SET_ENTRIES;
    /** The fixed part of a snapshot table entry (up to extra_data_size). */
    private static final int ENTRY_FIXED_BYTES = 40;

    /** The clusters the snapshots' metadata occupies, as runs. */
    final ClusterSet clusters;
    /** The bytes of the snapshots' L1 tables (what was charged to the chain's budget). */
    final long l1Bytes;
    /** What the scan read: the header's snapshot count and table offset, and the file's size then. */
    private final int nbSnapshots;
    private final long tableOffset;
    private final long fileSize;

    private Qcow2Snapshots(ClusterSet clusters, long l1Bytes, int nbSnapshots, long tableOffset, long fileSize) {
        this.clusters = clusters;
        this.l1Bytes = l1Bytes;
        this.nbSnapshots = nbSnapshots;
        this.tableOffset = tableOffset;
        this.fileSize = fileSize;
    }

    /**
     * Whether {@code h} names the table this scan read, in a file of the same size (a file that
     * grew may hold L2 tables the scan skipped as past its end): then the scan's result stands.
     */
    boolean sameTable(Qcow2Header h, long fileSize) {
        return h.nbSnapshots == nbSnapshots && h.snapshotsOffset == tableOffset && fileSize == this.fileSize;
    }

    /**
     * Reads the snapshot table {@code h} names and the L1 tables it names, allowed
     * {@code l1Budget} bytes of L1 tables in all.
     *
     * @throws IllegalArgumentException naming {@code name} and what is wrong or too large
     */
    static Qcow2Snapshots read(TableReader in, Qcow2Header h, long fileSize, long l1Budget, String name)
            throws IOException {
        Table t = readTable(in, h, fileSize, name);
        if (t.l1Bytes > l1Budget) {
            throw Qcow2Header.bad(name + ": its " + h.nbSnapshots + " internal snapshots' L1 tables take " + t.l1Bytes
                    + " bytes, over the " + l1Budget + " left of the " + Qcow2Options.CHAIN_L1_BUDGET_BYTES + " bytes of L1"
                    + " tables a chain may read beyond its top image's own (Qcow2Options.CHAIN_L1_BUDGET_BYTES)");
        }
        int cluster = h.clusterSize;
        ClusterSet.Builder set = new ClusterSet.Builder(h.clusterBits, fileSize, capacity(h, t), false);
        set.addBytes(h.snapshotsOffset, t.end);
        for (int i = 0; i < h.nbSnapshots; i++) {
            long at = t.l1Offsets[i];
            set.addBytes(at, at + (long) t.l1Sizes[i] * 8);
            for (int j = 0; j < t.l1Sizes[i]; j++) {
                long l2 = in.getLong(at + 8L * j) & L1E_OFFSET_MASK;
                if ((l2 & (cluster - 1)) != 0) {
                    // It would cover two clusters; QEMU reports it as corruption.
                    throw Qcow2Header.bad(name + ": snapshot " + i + "'s L1 entry " + j + " names an L2 table at " + l2
                            + ", not aligned to a cluster");
                }
                // A table past the end holds nothing a data cluster (checked against the end) could reach.
                if (l2 != 0 && l2 < fileSize) {
                    set.add(l2 >>> h.clusterBits);
                }
            }
        }
        return new Qcow2Snapshots(set.build(), t.l1Bytes, h.nbSnapshots, h.snapshotsOffset, fileSize);
    }

    /**
     * The most single clusters a scan of {@code t} adds: one per L1 entry (the tables themselves
     * are ranges). At most {@link #MAX_SET_ENTRIES}: the entries are within the budget.
     */
    private static int capacity(Qcow2Header h, Table t) {
        long n = t.l1Bytes / 8;
        if (n > MAX_SET_ENTRIES) { // cannot happen: the L1 tables are bounded above
            throw Qcow2Header.bad(h.nbSnapshots + " snapshots name over " + MAX_SET_ENTRIES + " clusters");
        }
        return (int) n;
    }

    /** The snapshot table's entries as far as they matter here, and where the table ends. */
    private record Table(long[] l1Offsets, int[] l1Sizes, long l1Bytes, long end) {
    }

    /** Reads and checks the snapshot table's entries (QEMU's bounds), without their L1 tables. */
    private static Table readTable(TableReader in, Qcow2Header h, long fileSize, String name) throws IOException {
        int n = h.nbSnapshots;
        long[] l1Offsets = new long[n];
        int[] l1Sizes = new int[n];
        long l1Bytes = 0;
        long pos = h.snapshotsOffset;
        for (int i = 0; i < n; i++) {
            if (pos - h.snapshotsOffset > MAX_TABLE_BYTES - ENTRY_FIXED_BYTES || pos > fileSize - ENTRY_FIXED_BYTES) {
                throw tableEnd(name, h, pos, fileSize);
            }
            long l1Offset = in.getLong(pos);
            int l1Size = in.getInt(pos + 8);
            int idBytes = in.getShort(pos + 12);
            int nameBytes = in.getShort(pos + 14);
            int extraBytes = in.getInt(pos + 36);
            if (extraBytes < 0 || extraBytes > MAX_EXTRA_DATA) {
                throw Qcow2Header.bad(name + ": snapshot " + i + " has " + extraBytes + " bytes of extra data (QEMU allows "
                        + MAX_EXTRA_DATA + ")");
            }
            // Alignment is checked even for an empty table, as QEMU's qcow2_validate_table does
            // (a negative offset is QEMU's over INT64_MAX).
            if (l1Size < 0 || (long) l1Size * 8 > MAX_L1_BYTES || l1Offset < 0 || (l1Offset & (h.clusterSize - 1)) != 0
                    || l1Size > 0 && (l1Offset == 0 || l1Offset > fileSize || (long) l1Size * 8 > fileSize - l1Offset)) {
                throw Qcow2Header.bad(name + ": snapshot " + i + "'s L1 table at " + l1Offset + " (" + l1Size
                        + " entries) is misaligned, past the end of the file or over QEMU's 32 MiB");
            }
            l1Offsets[i] = l1Offset;
            l1Sizes[i] = l1Size;
            l1Bytes += (long) l1Size * 8;
            pos += Qcow2Image.roundUp(ENTRY_FIXED_BYTES + (long) extraBytes + idBytes + nameBytes, 8);
        }
        if (pos - h.snapshotsOffset > MAX_TABLE_BYTES || pos > fileSize) {
            throw tableEnd(name, h, pos, fileSize);
        }
        return new Table(l1Offsets, l1Sizes, l1Bytes, pos);
    }

    private static IllegalArgumentException tableEnd(String name, Qcow2Header h, long pos, long fileSize) {
        return Qcow2Header.bad(name + ": the snapshot table of " + h.nbSnapshots + " entries at " + h.snapshotsOffset
                + " runs past " + pos + ": past the end of the " + fileSize + "-byte file or over QEMU's "
                + MAX_TABLE_BYTES + " bytes");
    }
}
