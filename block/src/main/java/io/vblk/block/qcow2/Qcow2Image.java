package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.NativeBuffer;

/**
 * The metadata of one qcow2 file read and checked at open, on the opening thread with ordinary
 * file reads: the header, the whole L1 table and the refcount table (both bounded by QEMU's
 * limits), and the set of clusters that hold metadata, so that no L2 entry can point a data
 * access into metadata. The per-request work (L2 tables, data) happens in {@link Qcow2Driver}.
 */
final class Qcow2Image {
    final Path path;
    final Qcow2Header header;
    final long fileSize;
    final int clusterBits;
    final int clusterSize;
    final int l2Bits;
    /** The L1 table, big-endian as on disk, in a buffer aligned for O_DIRECT writes. */
    final NativeBuffer l1;
    final int l1WriteBytes;
    /** The refcount table, big-endian as on disk. */
    final NativeBuffer reftable;
    final int reftableEntries;
    /** Sorted cluster offsets that hold metadata (header, tables, L2 tables, refcount blocks). */
    private final long[] metadata;

    private Qcow2Image(Path path, Qcow2Header header, long fileSize, NativeBuffer l1, int l1WriteBytes,
                       NativeBuffer reftable, long[] metadata) {
        this.path = path;
        this.header = header;
        this.fileSize = fileSize;
        this.clusterBits = header.clusterBits;
        this.clusterSize = header.clusterSize;
        this.l2Bits = clusterBits - 3;
        this.l1 = l1;
        this.l1WriteBytes = l1WriteBytes;
        this.reftable = reftable;
        this.reftableEntries = header.refcountTableClusters * (clusterSize / 8);
        this.metadata = metadata;
    }

    /**
     * Reads and checks {@code path}'s metadata. {@code alignment} is the O_DIRECT alignment the
     * L1 write-back must respect.
     *
     * @throws IllegalArgumentException naming what is wrong with the image
     */
    static Qcow2Image read(Path path, int alignment, io.vblk.aio.Image image) {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long fileSize = ch.size();
            ByteBuffer first = ByteBuffer.allocate((int) Math.min(fileSize, 1 << MAX_CLUSTER_BITS));
            readFully(ch, first, 0);
            first.flip();
            Qcow2Header h = Qcow2Header.parse(first, fileSize);
            int cluster = h.clusterSize;
            if (!image.readOnly() && (fileSize & (cluster - 1)) != 0) {
                // QEMU leaves the file ending inside the L1 table's cluster; whole clusters let
                // the L1 table be written back with O_DIRECT.
                int rc = image.extendTo(roundUp(fileSize, cluster));
                if (rc < 0) {
                    throw Qcow2Header.bad("cannot extend " + path + " to whole clusters: errno " + -rc);
                }
                fileSize = image.sizeBytes();
            }
            if (cluster < alignment) {
                throw Qcow2Header.bad(cluster + "-byte clusters are smaller than the " + alignment
                        + "-byte O_DIRECT alignment: open the image without O_DIRECT");
            }
            long l1Bytes = (long) h.l1Size * 8;
            int l1WriteBytes = (int) Math.max(alignment, roundUp(l1Bytes, alignment));
            if (l1WriteBytes > roundUp(l1Bytes, cluster) && l1Bytes > 0) {
                l1WriteBytes = (int) roundUp(l1Bytes, cluster);
            }
            NativeBuffer l1 = new NativeBuffer(Math.max(l1WriteBytes, 8), Math.max(alignment, 8));
            readInto(ch, l1, h.l1TableOffset, l1WriteBytes);
            int reftableBytes = h.refcountTableClusters * cluster;
            NativeBuffer reftable = new NativeBuffer(reftableBytes, Math.max(alignment, 8));
            readInto(ch, reftable, h.refcountTableOffset, reftableBytes);
            long[] meta = collectMetadata(h, fileSize, l1, reftable);
            return new Qcow2Image(path, h, fileSize, l1, l1WriteBytes, reftable, meta);
        } catch (IOException e) {
            throw new UncheckedIOException("qcow2: cannot read " + path + ": " + e.getMessage(), e);
        }
    }

    private static long[] collectMetadata(Qcow2Header h, long fileSize, NativeBuffer l1, NativeBuffer reftable) {
        int cluster = h.clusterSize;
        long[] meta = new long[16];
        int n = 0;
        meta[n++] = 0;
        for (long c = 0; c < roundUp((long) h.l1Size * 8, cluster); c += cluster) {
            meta = grow(meta, n);
            meta[n++] = h.l1TableOffset + c;
        }
        for (long c = 0; c < (long) h.refcountTableClusters * cluster; c += cluster) {
            meta = grow(meta, n);
            meta[n++] = h.refcountTableOffset + c;
        }
        UnsafeBuffer b = l1.buffer();
        for (int i = 0; i < h.l1Size; i++) {
            long e = b.getLong(i * 8, ByteOrder.BIG_ENDIAN);
            if (e == 0) {
                continue;
            }
            long off = e & L1E_OFFSET_MASK;
            if ((e & L1E_RESERVED) != 0 || off == 0 || off > fileSize - cluster) {
                throw Qcow2Header.bad("L1 entry " + i + " (0x" + Long.toHexString(e)
                        + ") has reserved bits set or points past the end of the file");
            }
            meta = grow(meta, n);
            meta[n++] = off;
        }
        UnsafeBuffer r = reftable.buffer();
        for (int i = 0; i < h.refcountTableClusters * (cluster / 8); i++) {
            long e = r.getLong(i * 8, ByteOrder.BIG_ENDIAN);
            if (e == 0) {
                continue;
            }
            long off = e & REFT_OFFSET_MASK;
            if ((e & ~REFT_OFFSET_MASK) != 0 || (off & (cluster - 1)) != 0 || off > fileSize - cluster) {
                throw Qcow2Header.bad("refcount table entry " + i + " (0x" + Long.toHexString(e)
                        + ") is misaligned or points past the end of the file");
            }
            meta = grow(meta, n);
            meta[n++] = off;
        }
        long[] sorted = Arrays.copyOf(meta, n);
        Arrays.sort(sorted);
        for (int i = 1; i < n; i++) {
            if (sorted[i] == sorted[i - 1]) {
                throw Qcow2Header.bad("metadata structures overlap at cluster offset " + sorted[i]);
            }
        }
        return sorted;
    }

    /** Whether the cluster at {@code hostOffset} holds metadata known at open. */
    boolean isMetadata(long hostOffset) {
        return Arrays.binarySearch(metadata, hostOffset & ~(long) (clusterSize - 1)) >= 0;
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

    private static long[] grow(long[] a, int n) {
        return n < a.length ? a : Arrays.copyOf(a, a.length * 2);
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
