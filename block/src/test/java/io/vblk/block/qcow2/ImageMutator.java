package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

/**
 * Structure-aware damage to a qcow2 file's bytes, the way a tenant crafting an upload would: a
 * header field, a header extension or the backing file name, an L1, L2 or refcount table entry,
 * a refcount block, the snapshot table, or the file cut short. Only metadata is touched, never
 * a data cluster's bytes, so any read that returns an untagged sector returned metadata. Every
 * change is written down ({@link #log}) exactly enough to replay it as a named test.
 */
final class ImageMutator {
    private final Random rnd;
    private final StringBuilder log = new StringBuilder();
    byte[] bytes;

    ImageMutator(byte[] original, long seed) {
        this.bytes = original.clone();
        this.rnd = new Random(seed);
    }

    String log() {
        return log.toString();
    }

    /** Applies {@code count} random mutations. */
    void mutate(int count) {
        for (int i = 0; i < count; i++) {
            mutateOnce(new ImageLayout(bytes));
        }
    }

    private void mutateOnce(ImageLayout l) {
        switch (rnd.nextInt(11)) {
            case 0:
            case 1:
                headerField(l);
                break;
            case 2:
                headerBytes(l);
                break;
            case 3:
                extension(l);
                break;
            case 4:
                l1Entry(l);
                break;
            case 5:
            case 6:
            case 7:
                l2Entry(l);
                break;
            case 8:
                refcounts(l);
                break;
            case 9:
                if (l.nbSnapshots > 0 && rnd.nextBoolean()) {
                    randomBytes(l.snapshotsOffset, Math.min(l.cluster, 1024), "snapshot table");
                } else {
                    metadataBytes(l);
                }
                break;
            default:
                truncate(l);
        }
    }

    // ------------------------------------------------------------------ the pieces

    /** {offset, width} of the header fields. */
    private static final int[][] FIELDS = {
        {MAGIC_OFFSET, 4}, {VERSION_OFFSET, 4}, {BACKING_FILE_OFFSET_OFFSET, 8}, {BACKING_FILE_SIZE_OFFSET, 4},
        {CLUSTER_BITS_OFFSET, 4}, {SIZE_OFFSET, 8}, {CRYPT_METHOD_OFFSET, 4}, {L1_SIZE_OFFSET, 4},
        {L1_TABLE_OFFSET_OFFSET, 8}, {REFCOUNT_TABLE_OFFSET_OFFSET, 8}, {REFCOUNT_TABLE_CLUSTERS_OFFSET, 4},
        {NB_SNAPSHOTS_OFFSET, 4}, {SNAPSHOTS_OFFSET_OFFSET, 8}, {INCOMPATIBLE_FEATURES_OFFSET, 8},
        {COMPATIBLE_FEATURES_OFFSET, 8}, {AUTOCLEAR_FEATURES_OFFSET, 8}, {REFCOUNT_ORDER_OFFSET, 4},
        {HEADER_LENGTH_OFFSET, 4}, {COMPRESSION_TYPE_OFFSET, 1},
    };

    private void headerField(ImageLayout l) {
        int[] f = FIELDS[rnd.nextInt(FIELDS.length)];
        // A truncation before may have cut the header short (to 94 bytes, say: the one-byte
        // compression type at 104 is then gone; put() skips what lies past the end).
        long orig = f[1] == 8 ? l.i64(f[0]) : f[1] == 4 ? l.i32(f[0]) : f[0] < bytes.length ? bytes[f[0]] : 0;
        put(f[0], f[1], interesting(l, orig), "header field at " + f[0]);
    }

    private void headerBytes(ImageLayout l) {
        randomBytes(0, Math.min(Math.min(l.cluster, 1024), bytes.length), "header");
    }

    /** A header extension's type, length or data (or the backing file name after them). */
    private void extension(ImageLayout l) {
        int pos = l.headerLength;
        int n = rnd.nextInt(3);
        for (int i = 0; i < n && pos + 8 <= Math.min(bytes.length, l.cluster); i++) {
            int len = l.i32(pos + 4);
            if (l.i32(pos) == 0 || len < 0 || len > l.cluster) {
                break;
            }
            pos += 8 + ((len + 7) & ~7);
        }
        if (pos < 0 || pos + 8 > bytes.length) {
            headerBytes(l);
            return;
        }
        switch (rnd.nextInt(4)) {
            case 0:
                put(pos, 4, rnd.nextBoolean() ? EXT_FEATURE_NAMES : rnd.nextInt(), "extension type at " + pos);
                break;
            case 1:
                put(pos + 4, 4, interesting(l, l.i32(pos + 4)), "extension length at " + pos);
                break;
            case 2:
                put(BACKING_FILE_SIZE_OFFSET, 4, interesting(l, l.i32(BACKING_FILE_SIZE_OFFSET)), "backing name length");
                break;
            default:
                randomBytes(pos, 64, "extension area");
        }
    }

    private void l1Entry(ImageLayout l) {
        if (l.l1Size <= 0) {
            headerField(l);
            return;
        }
        int i = pickEntry(l.l1Offset, Math.min(l.l1Size, 1 << 16));
        long at = l.l1Offset + 8L * i;
        long e = l.i64(at);
        put(at, 8, tableValue(l, e), "L1[" + i + "]");
    }

    private void l2Entry(ImageLayout l) {
        if (l.l2Tables.isEmpty()) {
            l1Entry(l);
            return;
        }
        long t = l.l2Tables.get(rnd.nextInt(l.l2Tables.size()));
        int i = pickEntry(t, l.cluster / 8);
        long at = t + 8L * i;
        long e = l.i64(at);
        long v;
        List<long[]> snapshots = l.snapshotRanges();
        if (!snapshots.isEmpty() && rnd.nextInt(3) == 0) {
            // Into a snapshot's metadata: the snapshot table, a snapshot's L1 table or an L2 table
            // a snapshot names (the driver must know them all as metadata).
            long[] r = snapshots.get(rnd.nextInt(snapshots.size()));
            long into = r[0] + ((long) rnd.nextInt((int) Math.max(1, Math.min(r[1], 1 << 20) / l.cluster)) << l.clusterBits);
            v = rnd.nextInt(4) == 0 ? OFLAG_COMPRESSED | (into & ((1L << (62 - (l.clusterBits - 8))) - 1))
                    : (into & ~(long) (l.cluster - 1)) | OFLAG_COPIED;
        } else if (rnd.nextInt(4) == 0) {
            // A compressed descriptor: host offset and sector count as the cluster size splits them.
            int x = 62 - (l.clusterBits - 8);
            long host = rnd.nextBoolean() ? pickOffset(l) + rnd.nextInt(l.cluster) : rnd.nextLong() & ((1L << x) - 1);
            long sectors = rnd.nextBoolean() ? rnd.nextInt(4) : rnd.nextLong() & ((1L << (62 - x)) - 1);
            v = OFLAG_COMPRESSED | (rnd.nextBoolean() ? OFLAG_COPIED : 0) | (sectors << x) | (host & ((1L << x) - 1));
        } else {
            v = tableValue(l, e);
        }
        put(at, 8, v, "L2 table " + t + " [" + i + "]");
    }

    private void refcounts(ImageLayout l) {
        if (rnd.nextBoolean() || l.refBlocks.isEmpty()) {
            int n = Math.max(1, Math.min(l.reftableClusters * (l.cluster / 8), 1 << 16));
            int i = pickEntry(l.reftableOffset, n);
            long at = l.reftableOffset + 8L * i;
            put(at, 8, tableValue(l, l.i64(at)) & ~OFLAG_COPIED, "refcount table[" + i + "]");
        } else {
            long b = l.refBlocks.get(rnd.nextInt(l.refBlocks.size()));
            if (rnd.nextBoolean()) {
                fill(b, l.cluster, rnd.nextBoolean() ? (byte) 0 : (byte) 0xff, "refcount block " + b);
            } else {
                randomBytes(b, Math.min(l.cluster, 512), "refcount block " + b);
            }
        }
    }

    private void metadataBytes(ImageLayout l) {
        long[] r = someMetadataRange(l);
        randomBytes(r[0], (int) Math.min(r[1], 4096), "metadata at " + r[0]);
    }

    private void truncate(ImageLayout l) {
        long size;
        switch (rnd.nextInt(3)) {
            case 0:
                // Inside the header, its extensions and the backing name, or its first clusters.
                size = rnd.nextInt(Math.min(bytes.length, rnd.nextBoolean() ? 1024 : 2 * l.cluster) + 1);
                break;
            case 1: {
                long[] r = someMetadataRange(l);
                size = r[0] + rnd.nextInt((int) Math.min(r[1], Integer.MAX_VALUE - 1L) + 1); // inside a table
                break;
            }
            default:
                size = (long) (rnd.nextDouble() * bytes.length);
        }
        size = Math.max(0, Math.min(size, bytes.length));
        log.append(String.format("truncate to %d%n", size));
        bytes = Arrays.copyOf(bytes, (int) size);
    }

    // ------------------------------------------------------------------ values

    /** An index into a table of {@code n} entries at {@code at}, a used one more often than not. */
    private int pickEntry(long at, int n) {
        if (rnd.nextInt(4) != 0) {
            for (int tries = 0; tries < 64; tries++) {
                int i = rnd.nextInt(n);
                long p = at + 8L * i;
                if (p >= 0 && p + 8 <= bytes.length && ByteBuffer.wrap(bytes).getLong((int) p) != 0) {
                    return i;
                }
            }
        }
        return rnd.nextInt(n);
    }

    /**
     * Some metadata range {offset, length}; the header's first cluster when the layout has none
     * left (an earlier mutation cut the file to nothing or broke the cluster size, and every range
     * was dropped as outside the file).
     */
    private long[] someMetadataRange(ImageLayout l) {
        List<long[]> ranges = l.metadataRanges();
        if (ranges.isEmpty()) {
            return new long[] {0, Math.max(1, Math.min(l.cluster, 1 << 16))};
        }
        return ranges.get(rnd.nextInt(ranges.size()));
    }

    /** The start of some table or the header (for pointers into metadata). */
    private long pickOffset(ImageLayout l) {
        return someMetadataRange(l)[0];
    }

    /** A table entry's replacement: into metadata, past the end, misaligned, flags flipped, a neighbour's value. */
    private long tableValue(ImageLayout l, long e) {
        long flags = e & (OFLAG_COPIED | OFLAG_COMPRESSED | OFLAG_ZERO);
        switch (rnd.nextInt(10)) {
            case 0:
                return pickOffset(l) | OFLAG_COPIED;
            case 1:
                return ((long) bytes.length + (long) rnd.nextInt(4) * l.cluster) | OFLAG_COPIED;
            case 2:
                return e + SECTOR_BYTES * (1 + rnd.nextInt(l.cluster / SECTOR_BYTES > 1 ? l.cluster / SECTOR_BYTES - 1 : 1));
            case 3:
                return e ^ OFLAG_ZERO;
            case 4:
                return e ^ OFLAG_COPIED;
            case 5:
                return e | (1L << (1 + rnd.nextInt(8))) | (rnd.nextBoolean() ? 1L << (56 + rnd.nextInt(6)) : 0);
            case 6:
                return 0;
            case 7:
                return ((long) (rnd.nextInt(Math.max(1, bytes.length / l.cluster + 2))) << l.clusterBits) | flags;
            case 8:
                return rnd.nextLong();
            default:
                return e ^ (1L << rnd.nextInt(64));
        }
    }

    /** A value for a header field: the edges, the neighbours, the file's size, a random one. */
    private long interesting(ImageLayout l, long orig) {
        switch (rnd.nextInt(12)) {
            case 0:
                return 0;
            case 1:
                return -1;
            case 2:
                return orig + 1;
            case 3:
                return orig - 1;
            case 4:
                return orig ^ (1L << rnd.nextInt(64));
            case 5:
                return orig * 2 + rnd.nextInt(3);
            case 6:
                return orig + l.cluster;
            case 7:
                return bytes.length;
            case 8:
                return Integer.MAX_VALUE;
            case 9:
                return 1L << rnd.nextInt(63);
            case 10:
                return orig + SECTOR_BYTES;
            default:
                return rnd.nextLong();
        }
    }

    // ------------------------------------------------------------------ edits

    private void put(long at, int width, long value, String what) {
        if (at < 0 || at + width > bytes.length) {
            return;
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        switch (width) {
            case 8:
                b.putLong((int) at, value);
                break;
            case 4:
                b.putInt((int) at, (int) value);
                break;
            default:
                b.put((int) at, (byte) value);
        }
        log.append(String.format("put%d @%d = 0x%x (%s)%n", width * 8, at, width == 8 ? value
                : width == 4 ? value & 0xffff_ffffL : value & 0xff, what));
    }

    private void randomBytes(long at, int span, String what) {
        if (at < 0 || at >= bytes.length || span <= 0) {
            return;
        }
        int n = 1 + rnd.nextInt(8);
        for (int k = 0; k < n; k++) {
            long p = at + rnd.nextInt(span);
            if (p < bytes.length) {
                put(p, 1, rnd.nextInt(256), what);
            }
        }
    }

    private void fill(long at, int len, byte value, String what) {
        if (at < 0 || at >= bytes.length) {
            return;
        }
        int end = (int) Math.min(bytes.length, at + len);
        Arrays.fill(bytes, (int) at, end, value);
        log.append(String.format("fill @%d +%d = 0x%x (%s)%n", at, end - at, value & 0xff, what));
    }
}
