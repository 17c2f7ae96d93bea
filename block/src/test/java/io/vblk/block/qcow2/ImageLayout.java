package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The test's own lenient reading of a qcow2 file's bytes (never throws; what does not parse is
 * left out): where the tables are, so that mutations hit them, and which host clusters the
 * active L2 tables name, so that the property can tell an image whose clusters are shared by two
 * guest clusters (refcount corruption QEMU serves just the same) from one the driver must keep
 * apart.
 */
final class ImageLayout {
    final byte[] bytes;
    final int clusterBits;
    final int cluster;
    final int l1Size;
    final long l1Offset;
    final long reftableOffset;
    final int reftableClusters;
    final int nbSnapshots;
    final long snapshotsOffset;
    final int headerLength;
    /** Offsets of the L2 tables the L1 table names (as read, masked). */
    final List<Long> l2Tables = new ArrayList<>();
    /** Offsets of the refcount blocks the refcount table names. */
    final List<Long> refBlocks = new ArrayList<>();
    /** The snapshot table's length in bytes as its entries say (0 without snapshots). */
    long snapshotTableBytes;
    /** {offset, bytes} of each snapshot's L1 table. */
    final List<long[]> snapshotL1s = new ArrayList<>();
    /** Offsets of the L2 tables the snapshots' L1 tables name (as read, masked). */
    final List<Long> snapshotL2Tables = new ArrayList<>();

    ImageLayout(byte[] bytes) {
        this.bytes = bytes;
        int bits = i32(CLUSTER_BITS_OFFSET);
        clusterBits = bits >= MIN_CLUSTER_BITS && bits <= MAX_CLUSTER_BITS ? bits : 16;
        cluster = 1 << clusterBits;
        l1Size = i32(L1_SIZE_OFFSET);
        l1Offset = i64(L1_TABLE_OFFSET_OFFSET);
        reftableOffset = i64(REFCOUNT_TABLE_OFFSET_OFFSET);
        reftableClusters = i32(REFCOUNT_TABLE_CLUSTERS_OFFSET);
        nbSnapshots = i32(NB_SNAPSHOTS_OFFSET);
        snapshotsOffset = i64(SNAPSHOTS_OFFSET_OFFSET);
        headerLength = i32(VERSION_OFFSET) >= 3 ? i32(HEADER_LENGTH_OFFSET) : V2_HEADER_LENGTH;
        for (int i = 0; i < Math.min(l1Size, 1 << 16); i++) {
            long e = i64(l1Offset + 8L * i) & L1E_OFFSET_MASK;
            if (e != 0) {
                l2Tables.add(e);
            }
        }
        for (long i = 0; i < Math.min((long) reftableClusters * cluster / 8, 1 << 16); i++) {
            long e = i64(reftableOffset + 8 * i) & REFT_OFFSET_MASK;
            if (e != 0) {
                refBlocks.add(e);
            }
        }
        readSnapshots();
    }

    /** The snapshot table's entries (qcow2.txt: L1 offset, L1 size, id and name lengths, extra data length). */
    private void readSnapshots() {
        long pos = snapshotsOffset;
        for (int i = 0; i < Math.min(nbSnapshots, 1024) && pos >= 0 && pos + 40 <= bytes.length; i++) {
            long l1 = i64(pos);
            int size = i32(pos + 8);
            int id = i32(pos + 12) >>> 16;
            int name = i32(pos + 12) & 0xffff;
            int extra = i32(pos + 36);
            if (extra < 0 || extra > 1 << 16) {
                break;
            }
            if (size > 0 && l1 > 0 && l1 < bytes.length) {
                snapshotL1s.add(new long[] {l1, 8L * size});
                for (int j = 0; j < Math.min(size, 1 << 16); j++) {
                    long e = i64(l1 + 8L * j) & L1E_OFFSET_MASK;
                    if (e != 0) {
                        snapshotL2Tables.add(e);
                    }
                }
            }
            pos += (40L + extra + id + name + 7) & ~7L;
        }
        snapshotTableBytes = nbSnapshots > 0 ? pos - snapshotsOffset : 0;
    }

    int i32(long at) {
        return at >= 0 && at + 4 <= bytes.length ? ByteBuffer.wrap(bytes).getInt((int) at) : 0;
    }

    long i64(long at) {
        return at >= 0 && at + 8 <= bytes.length ? ByteBuffer.wrap(bytes).getLong((int) at) : 0;
    }

    /**
     * Byte ranges {offset, length} of the metadata the driver knows (header cluster, L1,
     * refcount table and blocks, active L2 tables, the snapshot table and the snapshots' L1 and
     * L2 tables), which no guest read may return.
     */
    List<long[]> activeMetadataRanges() {
        return metadataRanges();
    }

    /** Byte ranges {offset, length} of the snapshot table and the snapshots' L1 and L2 tables. */
    List<long[]> snapshotRanges() {
        List<long[]> r = new ArrayList<>();
        if (nbSnapshots > 0) {
            r.add(new long[] {snapshotsOffset, Math.max(8, snapshotTableBytes)});
        }
        r.addAll(snapshotL1s);
        for (long t : snapshotL2Tables) {
            r.add(new long[] {t, cluster});
        }
        r.removeIf(x -> x[0] < 0 || x[0] >= bytes.length || x[1] <= 0 || x[1] > (64L << 20));
        return r;
    }

    /**
     * Byte ranges {offset, length} of the metadata: header cluster, L1, refcount table and blocks,
     * L2 tables, the snapshot table and the snapshots' L1 and L2 tables.
     */
    List<long[]> metadataRanges() {
        List<long[]> r = new ArrayList<>();
        r.add(new long[] {0, cluster});
        r.add(new long[] {l1Offset, Math.max(8, (long) l1Size * 8)});
        r.add(new long[] {reftableOffset, (long) reftableClusters * cluster});
        for (long b : refBlocks) {
            r.add(new long[] {b, cluster});
        }
        for (long t : l2Tables) {
            r.add(new long[] {t, cluster});
        }
        r.addAll(snapshotRanges());
        r.removeIf(x -> x[0] < 0 || x[0] >= bytes.length || x[1] <= 0 || x[1] > (64L << 20));
        return r;
    }

    /**
     * Whether two guest clusters share a host cluster through the active L2 tables (two standard
     * entries, or a standard entry and a compressed one): writing one in place changes the other,
     * as in QEMU. Such an image is refcount corruption, outside the model.
     */
    boolean sharesHostClusters() {
        Map<Long, Integer> standard = new HashMap<>();
        Set<Long> compressed = new HashSet<>();
        Set<Long> seenTables = new HashSet<>();
        int x = 62 - (clusterBits - 8);
        for (long t : l2Tables) {
            if (!seenTables.add(t)) {
                return true; // two L1 entries, one table
            }
            for (int i = 0; i < cluster / 8; i++) {
                long e = i64(t + 8L * i);
                if (e == 0) {
                    continue;
                }
                if ((e & OFLAG_COMPRESSED) != 0) {
                    long host = e & ((1L << x) - 1);
                    long sectors = (e >>> x) & ((1L << (62 - x)) - 1);
                    long end = host + (sectors + 1) * SECTOR_BYTES - (host & (SECTOR_BYTES - 1));
                    for (long c = host >>> clusterBits; c <= (end - 1) >>> clusterBits && c - (host >>> clusterBits) < 4; c++) {
                        compressed.add(c);
                    }
                } else if ((e & L2E_OFFSET_MASK) != 0) {
                    long c = (e & L2E_OFFSET_MASK) >>> clusterBits;
                    if (standard.merge(c, 1, Integer::sum) > 1) {
                        return true;
                    }
                }
            }
        }
        for (Long c : standard.keySet()) {
            if (compressed.contains(c)) {
                return true;
            }
        }
        return false;
    }
}
