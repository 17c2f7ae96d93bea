package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * The metadata of one qcow2 file read and checked at open, on the opening thread with ordinary
 * file reads: the header, the whole L1 table and, for a writable image, the refcount table (both
 * bounded by QEMU's limits), and the set of clusters that hold metadata, so that no L2 entry can
 * point a data access into metadata: the header, the tables, the L2 tables and refcount blocks
 * they name, and the internal snapshots' table, L1 tables and L2 tables ({@link Qcow2Snapshots}).
 * The per-request work (L2 tables, data) happens in {@link Qcow2Driver}.
 */
final class Qcow2Image {
    /** Linux's EDQUOT (not in {@link Errno}): a quota, like ENOSPC a full file system. */
    private static final int EDQUOT = 122;
    /** The file's path or the network disk's address, for messages. */
    final String path;
    final Qcow2Header header;
    /** The bytes the host held at open: offsets in the image's tables must lie below. */
    final long fileSize;
    /** Where new clusters are allocated from: the file's end, or a network disk's last used cluster. */
    final long allocationEnd;
    final int clusterBits;
    final int clusterSize;
    final int l2Bits;
    /** The L1 table, big-endian as on disk, in a buffer aligned for O_DIRECT writes. */
    final NativeBuffer l1;
    final int l1WriteBytes;
    /**
     * The refcount table, big-endian as on disk; null for a read-only image, which never
     * allocates (its entries were read once, through a small window, for the metadata set).
     */
    final NativeBuffer reftable;
    final int reftableEntries;
    /**
     * The clusters that hold metadata (header, tables, L2 tables, refcount blocks) as sorted runs
     * ({@link ClusterSet}): a table takes two indexes, not one per cluster. Null once dropped for
     * a reload ({@link #dropMetadata}): then every cluster counts as metadata.
     */
    private ClusterSet metadata;
    /**
     * The internal snapshots' metadata clusters, kept apart from the image's own (not merged:
     * no copy of up to {@link Qcow2Snapshots#MAX_HEAP_BYTES}), or null without snapshots.
     */
    final Qcow2Snapshots snapshots;
    /**
     * The bytes of L1 tables this image charged to its chain's budget
     * ({@link Qcow2Options#CHAIN_L1_BUDGET_BYTES}): its snapshots', and its own for a backing level.
     */
    final long l1Charge;
    /**
     * The heap of the metadata set this image charged to its chain's budget
     * ({@link Qcow2Options#CHAIN_METADATA_SET_BUDGET_BYTES}): a backing level's own set, else 0.
     */
    final long setCharge;

    private Qcow2Image(String path, Qcow2Header header, long fileSize, long allocationEnd, NativeBuffer l1, int l1WriteBytes,
                       NativeBuffer reftable, ClusterSet metadata, Qcow2Snapshots snapshots, long l1Charge,
                       long setCharge) {
        this.path = path;
        this.header = header;
        this.fileSize = fileSize;
        this.allocationEnd = allocationEnd;
        this.clusterBits = header.clusterBits;
        this.clusterSize = header.clusterSize;
        this.l2Bits = clusterBits - 3;
        this.l1 = l1;
        this.l1WriteBytes = l1WriteBytes;
        this.reftable = reftable;
        this.reftableEntries = header.refcountTableClusters * (clusterSize / 8);
        this.metadata = metadata;
        this.snapshots = snapshots;
        this.l1Charge = l1Charge;
        this.setCharge = setCharge;
    }

    /**
     * Reads and checks the metadata of the image {@code host} holds. {@code alignment} is the
     * alignment the L1 write-back must respect (O_DIRECT, the NBD block size).
     *
     * @throws IllegalArgumentException naming what is wrong with the image
     */
    static Qcow2Image read(Qcow2Host host, int alignment) {
        return read(host, alignment, true);
    }

    /**
     * As {@link #read(Qcow2Host, int)}; with {@code mayWrite} false (an inactive image, a
     * migration's destination before it takes over) the file is not even rounded to whole
     * clusters: nothing is written.
     */
    static Qcow2Image read(Qcow2Host host, int alignment, boolean mayWrite) {
        return read(host, alignment, mayWrite, false, Qcow2Options.CHAIN_L1_BUDGET_BYTES);
    }

    /**
     * As {@link #read(Qcow2Host, int, boolean)}, allowed {@code l1Budget} bytes of L1 tables
     * beyond a top image's own ({@link Qcow2Options#CHAIN_L1_BUDGET_BYTES}): the snapshots' L1
     * tables, and for a {@code backingLevel} its own L1 table too. Checked before they are read.
     *
     * @throws IllegalArgumentException naming the image and what is wrong or over the budget
     */
    static Qcow2Image read(Qcow2Host host, int alignment, boolean mayWrite, boolean backingLevel, long l1Budget) {
        return read(host, alignment, mayWrite, backingLevel, l1Budget, Qcow2Options.CHAIN_METADATA_SET_BUDGET_BYTES, null);
    }

    /**
     * As {@link #read(Qcow2Host, int, boolean, boolean, long)}; a {@code backingLevel}'s set of
     * metadata clusters may take {@code setBudget} bytes of heap
     * ({@link Qcow2Options#CHAIN_METADATA_SET_BUDGET_BYTES}).
     *
     * @throws IllegalArgumentException naming the image and what is wrong or over a budget
     */
    static Qcow2Image read(Qcow2Host host, int alignment, boolean mayWrite, boolean backingLevel, long l1Budget,
                           long setBudget) {
        return read(host, alignment, mayWrite, backingLevel, l1Budget, setBudget, null);
    }

    /**
     * As {@link #read(Qcow2Host, int, boolean, boolean, long, long)}, taking over {@code previous}'s
     * snapshots (read by an earlier open of the same image) instead of scanning them again when
     * the header still names the same snapshot table in a file of the same size
     * ({@link Qcow2Snapshots#sameTable}). For the reload at the first request, on the I/O thread,
     * with nothing in flight: {@code previous} is used up (its metadata set dropped first, its L1
     * and refcount tables read into when their sizes still fit), so the reload never holds two
     * copies of a level's tables; if the read fails, {@code previous} is unusable (the caller
     * marks the image corrupt).
     */
    static Qcow2Image read(Qcow2Host host, int alignment, boolean mayWrite, boolean backingLevel, long l1Budget,
                           long setBudget, Qcow2Image previous) {
        if (previous != null) {
            previous.dropMetadata(); // built again below: not held twice
        }
        try {
            long fileSize = host.storedBytes();
            if (fileSize != host.sizeBytes()) {
                // Another writer (a migration's source) changed the file since the back end learnt
                // its size: learnt, not allocated (rev14e M-b: fallocating its sparse range failed
                // on a full file system, and the rounding below allocated from the stale size).
                host.refreshSize();
            }
            int firstBytes = (int) Math.min(fileSize, 1 << MAX_CLUSTER_BITS);
            NativeBuffer firstBuf = DirectMemory.allocate(Math.max(8, (int) roundUp(firstBytes, Math.max(alignment, 8))),
                    Math.max(alignment, 8), host.name(), "reading its header");
            host.read(0, firstBuf, firstBuf.capacity());
            ByteBuffer first = firstBuf.buffer().byteBuffer().duplicate();
            first.clear().limit(firstBytes);
            Qcow2Header h = Qcow2Header.parse(first.slice(), fileSize);
            int cluster = h.clusterSize;
            if (mayWrite && host.file() && !host.readOnly() && (fileSize & (cluster - 1)) != 0) {
                // QEMU leaves the file ending inside the L1 table's cluster; whole clusters let
                // the L1 table be written back with O_DIRECT.
                int rc = host.extendTo(roundUp(fileSize, cluster));
                if (rc == -Errno.ENOSPC || rc == -EDQUOT) {
                    // A full file system is no corruption: the file stays as it is (QEMU does not
                    // round it either); a table write past its end fails when it comes.
                    System.err.println("vblk: qcow2 " + host.name() + ": cannot round the file to whole clusters: "
                            + (rc == -Errno.ENOSPC ? "no space left" : "disk quota exceeded") + ", left unrounded");
                } else if (rc < 0) {
                    throw Qcow2Header.bad("cannot extend " + host.name() + " to whole clusters: errno " + -rc);
                }
                fileSize = host.storedBytes();
            }
            if (cluster < alignment) {
                throw Qcow2Header.bad(cluster + "-byte clusters are smaller than the " + alignment
                        + "-byte alignment of " + host.name() + (host.file() ? ": open the image without O_DIRECT" : ""));
            }
            long l1Bytes = (long) h.l1Size * 8;
            long l1Charge = backingLevel ? l1Bytes : 0;
            if (l1Charge > l1Budget) {
                throw Qcow2Header.bad("backing file " + host.name() + ": its L1 table of " + l1Bytes + " bytes is over the "
                        + l1Budget + " left of the " + Qcow2Options.CHAIN_L1_BUDGET_BYTES + " bytes of L1 tables a chain"
                        + " may hold beyond its top image's own (Qcow2Options.CHAIN_L1_BUDGET_BYTES)");
            }
            int l1WriteBytes = (int) Math.max(alignment, roundUp(l1Bytes, alignment));
            if (l1WriteBytes > roundUp(l1Bytes, cluster) && l1Bytes > 0) {
                l1WriteBytes = (int) roundUp(l1Bytes, cluster);
            }
            // A reload reads into the tables it replaces (nothing is in flight: the first
            // request) rather than holding both for a moment: up to 32 + 8 MiB.
            int l1BufferBytes = (int) roundUp(Math.max(l1WriteBytes, 8), Math.max(alignment, 8));
            NativeBuffer l1 = previous != null && previous.l1.capacity() == l1BufferBytes ? previous.l1
                    : DirectMemory.allocate(Math.max(l1WriteBytes, 8), Math.max(alignment, 8), host.name(),
                            "its L1 table");
            host.read(h.l1TableOffset, l1, l1WriteBytes);
            int reftableBytes = h.refcountTableClusters * cluster;
            // A read-only image never allocates: its refcount table (up to 8 MiB) is only read
            // for the metadata set, through a window, and not kept.
            NativeBuffer reftable = null;
            TableReader window = null;
            Entries refEntries;
            if (host.readOnly()) {
                TableReader w = window = new TableReader(host, alignment);
                refEntries = i -> w.getLong(h.refcountTableOffset + 8L * i);
            } else {
                NativeBuffer r = reftable = previous != null && previous.reftable != null
                        && previous.reftable.capacity() == roundUp(reftableBytes, Math.max(alignment, 8)) ? previous.reftable
                        : DirectMemory.allocate(reftableBytes, Math.max(alignment, 8), host.name(), "its refcount table");
                host.read(h.refcountTableOffset, reftable, reftableBytes);
                refEntries = i -> r.buffer().getLong(i * 8, ByteOrder.BIG_ENDIAN);
            }
            if (!mayWrite) {
                // An inactive open races the source's backend, which writes a cluster (growing
                // the file) before the L1 or refcount table entry naming it: the size read after
                // the tables covers every entry they hold.
                fileSize = Math.max(fileSize, host.storedBytes());
            }
            ClusterSet meta = collectMetadata(h, fileSize, l1, refEntries);
            long setCharge = backingLevel ? meta.heapBytes() : 0;
            if (setCharge > setBudget) {
                throw Qcow2Header.bad("backing file " + host.name() + ": its metadata clusters (L2 tables, refcount"
                        + " blocks) take " + setCharge + " bytes as runs, over the " + setBudget + " left of the "
                        + Qcow2Options.CHAIN_METADATA_SET_BUDGET_BYTES + " bytes the backing levels' sets may take"
                        + " (Qcow2Options.CHAIN_METADATA_SET_BUDGET_BYTES)");
            }
            Qcow2Snapshots snapshots = null;
            if (h.nbSnapshots > 0) {
                Qcow2Snapshots before = previous != null ? previous.snapshots : null;
                snapshots = before != null && before.sameTable(h, fileSize) && before.l1Bytes <= l1Budget - l1Charge ? before
                        : Qcow2Snapshots.read(window != null ? window : new TableReader(host, alignment), h, fileSize,
                                l1Budget - l1Charge, host.name());
                l1Charge += snapshots.l1Bytes;
            }
            long lastMetaCluster = meta.last();
            if (snapshots != null) {
                lastMetaCluster = Math.max(lastMetaCluster, snapshots.clusters.last());
            }
            long lastMeta = lastMetaCluster * cluster;
            // A read-only image allocates nothing: where its clusters end does not matter.
            long allocationEnd = host.file() || reftable == null ? fileSize
                    : allocationEnd(host, h, fileSize, reftable, lastMeta, alignment);
            return new Qcow2Image(Qcow2Header.printable(host.name()), h, fileSize, allocationEnd, l1, l1WriteBytes, reftable, meta, snapshots, l1Charge,
                    setCharge);
        } catch (IOException e) {
            throw new UncheckedIOException("qcow2: cannot read " + host.name() + ": " + e.getMessage(), e);
        }
    }

    /**
     * Where the image's allocated clusters end on a network disk, whose size is its own: one past
     * the last cluster with a non-zero refcount (and past every metadata cluster), read from the
     * refcount blocks. Clusters are allocated from there, never over a cluster in use.
     *
     * <p>Only the refcount blocks that describe clusters below the disk's end are read: the
     * result is capped there anyway, and a hostile refcount table may name a million blocks. So
     * the bytes read are bounded by the disk's real size over the entries per block (one block
     * of 2 MiB clusters with 1-bit refcounts covers 32 TiB), never by a header field. Each block
     * is tested 8 bytes at a time, from its end.
     */
    private static long allocationEnd(Qcow2Host host, Qcow2Header h, long diskSize, NativeBuffer reftable,
                                      long lastMeta, int alignment) throws IOException {
        int cluster = h.clusterSize;
        long diskEnd = roundUp(diskSize, cluster);
        long end = lastMeta + cluster;
        long entriesPerBlock = ((long) cluster * 8) >>> h.refcountOrder;
        int bits = 1 << h.refcountOrder;
        UnsafeBuffer r = reftable.buffer();
        int entries = h.refcountTableClusters * (cluster / 8);
        long diskClusters = diskEnd / cluster;
        int useful = (int) Math.min(entries, (diskClusters + entriesPerBlock - 1) / entriesPerBlock);
        NativeBuffer block = null;
        for (int i = useful - 1; i >= 0; i--) {
            long off = r.getLong(i * 8, ByteOrder.BIG_ENDIAN) & REFT_OFFSET_MASK;
            if (off == 0) {
                continue;
            }
            if (block == null) {
                block = new NativeBuffer(cluster, Math.max(alignment, 8));
            }
            host.read(off, block, cluster);
            long last = lastUsedEntry(block.buffer(), cluster, bits);
            if (last >= 0) {
                long c = ((long) i * entriesPerBlock + last + 1) * cluster;
                return Math.min(Math.max(end, c), diskEnd);
            }
        }
        return Math.min(end, diskEnd);
    }

    /** The index of the last non-zero refcount in a block of {@code bits}-bit entries, or -1. */
    static long lastUsedEntry(UnsafeBuffer b, int cluster, int bits) {
        int perWord = 64 / bits;
        for (int q = cluster / 8 - 1; q >= 0; q--) {
            if (b.getLong(q * 8) == 0) {
                continue;
            }
            for (long j = (long) q * perWord + perWord - 1; j >= (long) q * perWord; j--) {
                long bit = j * bits;
                boolean used = false;
                if (bits >= 8) {
                    for (int k = 0; k < bits / 8 && !used; k++) {
                        used = b.getByte((int) (bit / 8) + k) != 0;
                    }
                } else {
                    int v = b.getByte((int) (bit / 8)) & 0xff;
                    used = ((v >>> (bit % 8)) & ((1 << bits) - 1)) != 0;
                }
                if (used) {
                    return j;
                }
            }
        }
        return -1;
    }

    /** A table's entries by index, from memory or through a {@link TableReader}. */
    @FunctionalInterface
    private interface Entries {
        long get(int index) throws IOException;
    }

    /**
     * The metadata clusters as runs ({@link ClusterSet}): the header, L1 and refcount tables as
     * ranges, one cluster per L2 table and refcount block; checks every entry and refuses two
     * structures in one cluster.
     */
    private static ClusterSet collectMetadata(Qcow2Header h, long fileSize, NativeBuffer l1, Entries r) throws IOException {
        int cluster = h.clusterSize;
        int bits = h.clusterBits;
        UnsafeBuffer b = l1.buffer();
        int reftableEntries = h.refcountTableClusters * (cluster / 8);
        long l1Clusters = roundUp((long) h.l1Size * 8, cluster) / cluster;
        long n = 0;
        for (int i = 0; i < h.l1Size; i++) {
            long e = b.getLong(i * 8, ByteOrder.BIG_ENDIAN);
            if (e == 0) {
                continue;
            }
            long off = e & L1E_OFFSET_MASK;
            // A table that does not start a cluster spans two, and only the first would be known
            // as metadata: a data cluster in the second got the table's entries written into it
            // (a write to one guest cluster changed another). QEMU calls that corruption too.
            if ((e & L1E_RESERVED) != 0 || off == 0 || (off & (cluster - 1)) != 0 || off > fileSize - cluster) {
                throw Qcow2Header.bad("L1 entry " + i + " (0x" + Long.toHexString(e)
                        + ") has reserved bits set, is misaligned or points past the end of the file");
            }
            n++;
        }
        for (int i = 0; i < reftableEntries; i++) {
            long e = r.get(i);
            if (e == 0) {
                continue;
            }
            long off = e & REFT_OFFSET_MASK;
            if ((e & ~REFT_OFFSET_MASK) != 0 || (off & (cluster - 1)) != 0 || off > fileSize - cluster) {
                throw Qcow2Header.bad("refcount table entry " + i + " (0x" + Long.toHexString(e)
                        + ") is misaligned or points past the end of the file");
            }
            n++;
        }
        // Every index lies below the file's end (checked above and by the header's checks).
        ClusterSet.Builder set = new ClusterSet.Builder(bits, fileSize, (int) n, true);
        set.addClusters(0, 1);
        set.addClusters(h.l1TableOffset >>> bits, (h.l1TableOffset >>> bits) + l1Clusters);
        set.addClusters(h.refcountTableOffset >>> bits, (h.refcountTableOffset >>> bits) + h.refcountTableClusters);
        for (int i = 0; i < h.l1Size; i++) {
            long e = b.getLong(i * 8, ByteOrder.BIG_ENDIAN);
            if (e != 0) {
                set.add((e & L1E_OFFSET_MASK) >>> bits);
            }
        }
        for (int i = 0; i < reftableEntries; i++) {
            long e = r.get(i);
            if (e != 0) {
                set.add((e & REFT_OFFSET_MASK) >>> bits);
            }
        }
        return set.build();
    }

    /**
     * Whether the cluster at {@code hostOffset} holds metadata known at open: the image's own or
     * its snapshots' (a snapshot's L2 table is usually one the active L1 table names too).
     */
    boolean isMetadata(long hostOffset) {
        long c = hostOffset >>> clusterBits;
        ClusterSet own = metadata;
        return own == null || own.contains(c) || snapshots != null && snapshots.clusters.contains(c);
    }

    /** The image's own metadata clusters (tests), null once dropped. */
    ClusterSet metadataClusters() {
        return metadata;
    }

    /**
     * Lets go of the metadata set before the image is read again ({@link #read} with this as
     * {@code previous}), so that the reload does not hold two; every cluster counts as metadata
     * from then on (nothing serves this image's requests once it was replaced or failed).
     */
    void dropMetadata() {
        metadata = null;
    }

    long l1Entry(int index) {
        return l1.buffer().getLong(index * 8, ByteOrder.BIG_ENDIAN);
    }

    void setL1Entry(int index, long value) {
        l1.buffer().putLong(index * 8, value, ByteOrder.BIG_ENDIAN);
    }

    long reftableEntry(int index) {
        return reftable.buffer().getLong(index * 8, ByteOrder.BIG_ENDIAN);
    }

    void setReftableEntry(int index, long value) {
        reftable.buffer().putLong(index * 8, value, ByteOrder.BIG_ENDIAN);
    }

    static long roundUp(long v, long to) {
        return (v + to - 1) / to * to;
    }

    static void readFully(FileChannel ch, ByteBuffer dst, long position) throws IOException {
        long pos = position;
        while (dst.hasRemaining()) {
            int n = ch.read(dst, pos);
            if (n < 0) {
                throw Qcow2Header.bad("unexpected end of file at " + pos);
            }
            pos += n;
        }
    }

    /** Reads up to {@code length} bytes; what lies past the end of the file stays zero. */
    static void readInto(FileChannel ch, NativeBuffer dst, long position, int length) throws IOException {
        ByteBuffer bb = dst.buffer().byteBuffer().duplicate();
        bb.clear().limit(length);
        long pos = position;
        while (bb.hasRemaining()) {
            int n = ch.read(bb, pos);
            if (n < 0) {
                break;
            }
            pos += n;
        }
    }
}
