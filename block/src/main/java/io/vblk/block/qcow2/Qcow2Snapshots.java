package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.io.IOException;
import java.util.Arrays;

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
 * is read. Only the cluster indexes are kept (the L2 tables a snapshot shares with the active
 * state or another snapshot once).
 */
final class Qcow2Snapshots {
    /** QEMU's QCOW_MAX_SNAPSHOTS_SIZE: the snapshot table's bytes. */
    static final long MAX_TABLE_BYTES = 64L << 20;
    /** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA. */
    static final int MAX_EXTRA_DATA = 1024;
    /** The fixed part of a snapshot table entry (up to extra_data_size). */
    private static final int ENTRY_FIXED_BYTES = 40;

    /** Sorted, distinct indexes of the clusters the snapshots' metadata occupies ({@link ClusterSet#get}). */
    final ClusterSet clusters;
    /** The bytes of the snapshots' L1 tables (what was charged to the chain's budget). */
    final long l1Bytes;

    private Qcow2Snapshots(ClusterSet clusters, long l1Bytes) {
        this.clusters = clusters;
        this.l1Bytes = l1Bytes;
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
        ClusterSet set = new ClusterSet(h.clusterBits, fileSize);
        set.addRange(h.snapshotsOffset, t.end);
        for (int i = 0; i < h.nbSnapshots; i++) {
            long at = t.l1Offsets[i];
            set.addRange(at, at + (long) t.l1Sizes[i] * 8);
            for (int j = 0; j < t.l1Sizes[i]; j++) {
                long l2 = in.getLong(at + 8L * j) & L1E_OFFSET_MASK;
                // A table past the end holds nothing a data cluster (checked against the end) could
                // reach; a misaligned one covers two clusters. QEMU checks neither at open.
                if (l2 != 0 && l2 < fileSize) {
                    set.addRange(l2, Math.min(l2 + cluster, fileSize));
                }
            }
        }
        return new Qcow2Snapshots(set.sorted(), t.l1Bytes);
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
            if (l1Size < 0 || (long) l1Size * 8 > MAX_L1_BYTES || l1Size > 0 && (l1Offset <= 0
                    || (l1Offset & (h.clusterSize - 1)) != 0 || l1Offset > fileSize
                    || (long) l1Size * 8 > fileSize - l1Offset)) {
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

    /**
     * Cluster indexes collected with duplicates (the L2 tables snapshots share), sorted and made
     * distinct whenever the array fills, so it grows with the distinct clusters, not the entries.
     * Ints while every index fits (files below 2^31 clusters), as the image's own set
     * ({@link Qcow2Image}): the budget's 8 Mi L1 entries, all distinct, take 32 MiB, not 64.
     */
    static final class ClusterSet {
        private final int clusterBits;
        private int[] ints;
        private long[] longs;
        private int n;

        ClusterSet(int clusterBits, long fileSize) {
            this.clusterBits = clusterBits;
            if (Qcow2Image.roundUp(fileSize, 1L << clusterBits) >>> clusterBits < Integer.MAX_VALUE) {
                ints = new int[1024];
            } else {
                longs = new long[1024];
            }
        }

        /** Every cluster the bytes {@code [from, to)} touch (all below the file's end). */
        void addRange(long from, long to) {
            for (long c = from >>> clusterBits; c << clusterBits < to; c++) {
                add(c);
            }
        }

        void add(long c) {
            int capacity = ints != null ? ints.length : longs.length;
            if (n == capacity) {
                compact();
                if (n > capacity / 2) {
                    if (ints != null) {
                        ints = Arrays.copyOf(ints, capacity * 2);
                    } else {
                        longs = Arrays.copyOf(longs, capacity * 2);
                    }
                }
            }
            if (ints != null) {
                ints[n++] = (int) c;
            } else {
                longs[n++] = c;
            }
        }

        private void compact() {
            int k = 0;
            if (ints != null) {
                Arrays.sort(ints, 0, n);
                for (int i = 0; i < n; i++) {
                    if (k == 0 || ints[i] != ints[k - 1]) {
                        ints[k++] = ints[i];
                    }
                }
            } else {
                Arrays.sort(longs, 0, n);
                for (int i = 0; i < n; i++) {
                    if (k == 0 || longs[i] != longs[k - 1]) {
                        longs[k++] = longs[i];
                    }
                }
            }
            n = k;
        }

        int size() {
            return n;
        }

        /** The i-th cluster index, in order once {@link #sorted} ran. */
        long get(int i) {
            return ints != null ? ints[i] : longs[i];
        }

        /** Sorts and drops duplicates; returns this. */
        ClusterSet sorted() {
            compact();
            return this;
        }
    }
}
