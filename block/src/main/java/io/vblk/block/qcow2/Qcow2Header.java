package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * A parsed and checked qcow2 header. The file is untrusted: every field is checked against the
 * file size and QEMU's limits, with overflow-safe arithmetic, and anything this driver does not
 * implement is refused with a message that names it. Construct with {@link #parse}.
 */
final class Qcow2Header {
    final int version;
    final int cryptMethod;
    final int clusterBits;
    final int clusterSize;
    final long virtualSize;
    final int l1Size;
    final long l1TableOffset;
    final long refcountTableOffset;
    final int refcountTableClusters;
    final int nbSnapshots;
    final long snapshotsOffset;
    final long incompatibleFeatures;
    final long compatibleFeatures;
    final long autoclearFeatures;
    final int refcountOrder;
    final int headerLength;
    final int compressionType;
    final String backingFile;
    final String backingFormat;

    private Qcow2Header(ByteBuffer b, long fileSize, String backingFile, String backingFormat) {
        version = b.getInt(VERSION_OFFSET);
        cryptMethod = b.getInt(CRYPT_METHOD_OFFSET);
        clusterBits = b.getInt(CLUSTER_BITS_OFFSET);
        clusterSize = 1 << clusterBits;
        virtualSize = b.getLong(SIZE_OFFSET);
        l1Size = b.getInt(L1_SIZE_OFFSET);
        l1TableOffset = b.getLong(L1_TABLE_OFFSET_OFFSET);
        refcountTableOffset = b.getLong(REFCOUNT_TABLE_OFFSET_OFFSET);
        refcountTableClusters = b.getInt(REFCOUNT_TABLE_CLUSTERS_OFFSET);
        nbSnapshots = b.getInt(NB_SNAPSHOTS_OFFSET);
        snapshotsOffset = b.getLong(SNAPSHOTS_OFFSET_OFFSET);
        if (version >= 3) {
            incompatibleFeatures = b.getLong(INCOMPATIBLE_FEATURES_OFFSET);
            compatibleFeatures = b.getLong(COMPATIBLE_FEATURES_OFFSET);
            autoclearFeatures = b.getLong(AUTOCLEAR_FEATURES_OFFSET);
            refcountOrder = b.getInt(REFCOUNT_ORDER_OFFSET);
            headerLength = b.getInt(HEADER_LENGTH_OFFSET);
            compressionType = headerLength > COMPRESSION_TYPE_OFFSET ? b.get(COMPRESSION_TYPE_OFFSET) & 0xff : 0;
        } else {
            incompatibleFeatures = 0;
            compatibleFeatures = 0;
            autoclearFeatures = 0;
            refcountOrder = 4;
            headerLength = V2_HEADER_LENGTH;
            compressionType = COMPRESSION_DEFLATE;
        }
        this.backingFile = backingFile;
        this.backingFormat = backingFormat;
    }

    /** Reads the header of a file of {@code fileSize} bytes from its first cluster {@code b}. */
    static Qcow2Header parse(ByteBuffer first, long fileSize) {
        ByteBuffer b = first.duplicate().order(ByteOrder.BIG_ENDIAN);
        if (b.limit() < V2_HEADER_LENGTH || b.getInt(MAGIC_OFFSET) != MAGIC) {
            throw bad("not a qcow2 image (no QFI\\xfb magic)");
        }
        int version = b.getInt(VERSION_OFFSET);
        if (version != 2 && version != 3) {
            throw bad("unsupported qcow2 version " + version + " (2 and 3 are)");
        }
        int clusterBits = b.getInt(CLUSTER_BITS_OFFSET);
        if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
            throw bad("cluster_bits " + clusterBits + " outside " + MIN_CLUSTER_BITS + ".." + MAX_CLUSTER_BITS);
        }
        int clusterSize = 1 << clusterBits;
        if (b.limit() < Math.min(clusterSize, fileSize)) {
            throw bad("short header read");
        }
        if (version >= 3 && b.limit() < V3_MIN_HEADER_LENGTH) {
            throw bad("version 3 header cut short: the file holds " + b.limit() + " of its " + V3_MIN_HEADER_LENGTH
                    + " bytes");
        }
        int headerLength = version >= 3 ? b.getInt(HEADER_LENGTH_OFFSET) : V2_HEADER_LENGTH;
        if (version >= 3 && (headerLength < V3_MIN_HEADER_LENGTH || headerLength > clusterSize || (headerLength & 7) != 0)) {
            throw bad("header_length " + headerLength + " invalid (104 or more, a multiple of 8, within the first cluster)");
        }
        if (headerLength > b.limit()) {
            throw bad("header_length " + headerLength + " runs past the end of the file (" + b.limit() + " bytes)");
        }
        String[] backing = readBacking(b, clusterSize, headerLength, version);
        Qcow2Header h = new Qcow2Header(b, fileSize, backing[0], backing[1]);
        h.check(fileSize);
        return h;
    }

    private void check(long fileSize) {
        if (cryptMethod != 0) {
            throw bad("encrypted images (crypt_method " + cryptMethod + ") are not supported");
        }
        long unknown = incompatibleFeatures & ~(INCOMPAT_KNOWN | INCOMPAT_EXTERNAL_DATA | INCOMPAT_EXTENDED_L2);
        if (unknown != 0) {
            throw bad("unknown incompatible features 0x" + Long.toHexString(unknown) + ": refused");
        }
        if ((incompatibleFeatures & INCOMPAT_EXTERNAL_DATA) != 0) {
            throw bad("external data files (incompatible feature bit 2) are not supported");
        }
        if ((incompatibleFeatures & INCOMPAT_EXTENDED_L2) != 0) {
            throw bad("extended L2 entries / subclusters (incompatible feature bit 4) are not supported");
        }
        if (compressionType != COMPRESSION_DEFLATE && compressionType != COMPRESSION_ZSTD) {
            throw bad("unknown compression type " + compressionType);
        }
        if (compressionType != COMPRESSION_DEFLATE && (incompatibleFeatures & INCOMPAT_COMPRESSION_TYPE) == 0) {
            throw bad("compression type " + compressionType + " without the compression-type incompatible bit");
        }
        if (refcountOrder < 0 || refcountOrder > 6) {
            throw bad("refcount_order " + refcountOrder + " outside 0..6");
        }
        if (virtualSize < 0 || virtualSize > MAX_VIRTUAL_SIZE || (virtualSize & (SECTOR_BYTES - 1)) != 0) {
            throw bad("virtual size " + virtualSize + " absurd or not a multiple of 512");
        }
        if (l1Size < 0 || (long) l1Size * 8 > MAX_L1_BYTES) {
            throw bad("l1_size " + l1Size + " over QEMU's 32 MiB limit");
        }
        long l2Entries = clusterSize / 8;
        long needed = ceilDiv(ceilDiv(virtualSize, clusterSize), l2Entries);
        if (l1Size < needed) {
            throw bad("l1_size " + l1Size + " too small for a " + virtualSize + "-byte disk (needs " + needed + ")");
        }
        checkRange("L1 table", l1TableOffset, (long) l1Size * 8, fileSize);
        if (refcountTableClusters <= 0 || (long) refcountTableClusters * clusterSize > MAX_REFTABLE_BYTES) {
            throw bad("refcount_table_clusters " + refcountTableClusters + " absurd");
        }
        checkRange("refcount table", refcountTableOffset, (long) refcountTableClusters * clusterSize, fileSize);
        if (nbSnapshots < 0 || nbSnapshots > 65536) {
            throw bad("nb_snapshots " + nbSnapshots + " absurd");
        }
        if (nbSnapshots > 0) {
            checkRange("snapshot table", snapshotsOffset, 1, fileSize);
        }
    }

    private void checkRange(String what, long offset, long length, long fileSize) {
        if (offset <= 0 || (offset & (clusterSize - 1)) != 0 || length < 0 || offset > fileSize
                || length > fileSize - offset) {
            throw bad(what + " at " + offset + " (+" + length + " bytes) is misaligned or past the end of the "
                    + fileSize + "-byte file");
        }
    }

    private static String[] readBacking(ByteBuffer b, int clusterSize, int headerLength, int version) {
        long backingOffset = b.getLong(BACKING_FILE_OFFSET_OFFSET);
        int backingSize = b.getInt(BACKING_FILE_SIZE_OFFSET);
        // The header's extensions and the backing name lie in the first cluster, as far as the
        // file holds it: a file cut short inside them (the buffer ends with the file) is read
        // no further than its end, never past the buffer's limit (an IndexOutOfBoundsException
        // out of the open, found by Qcow2HostileImagePropertyTest).
        int held = Math.min(clusterSize, b.limit());
        String file = null;
        if (backingOffset != 0) {
            if (backingSize <= 0 || backingSize > 1023 || backingOffset < headerLength
                    || backingOffset > held - backingSize) {
                throw bad("backing file name at " + backingOffset + " (" + backingSize
                        + " bytes) is not inside the first cluster and the file, or longer than 1023 bytes");
            }
            byte[] name = new byte[backingSize];
            b.get((int) backingOffset, name);
            file = new String(name, StandardCharsets.UTF_8);
            if (file.indexOf('\0') >= 0) {
                throw bad("backing file name contains NUL");
            }
        }
        String format = null;
        int pos = headerLength;
        int end = backingOffset != 0 ? (int) backingOffset : held;
        for (int n = 0; pos + 8 <= end; n++) {
            if (n > 1024) {
                throw bad("too many header extensions");
            }
            int type = b.getInt(pos);
            int length = b.getInt(pos + 4);
            if (type == EXT_END) {
                break;
            }
            if (length < 0 || length > end - pos - 8) {
                throw bad("header extension 0x" + Integer.toHexString(type) + " runs past the header");
            }
            if (type == EXT_BACKING_FORMAT) {
                if (length >= MAX_BACKING_FORMAT_BYTES) {
                    // QEMU refuses it too (its backing_format[16]); the name is echoed in errors.
                    throw bad("backing format extension of " + length + " bytes: a format name is shorter than "
                            + MAX_BACKING_FORMAT_BYTES + " bytes");
                }
                byte[] f = new byte[length];
                b.get(pos + 8, f);
                format = new String(f, StandardCharsets.UTF_8);
            } else if (type == EXT_DATA_FILE) {
                throw bad("external data file extension present: not supported");
            } else if (type == EXT_ENCRYPTION) {
                throw bad("encryption header extension present: not supported");
            }
            pos += 8 + ((length + 7) & ~7);
        }
        return new String[] {file, format};
    }

    /** QEMU's bound on the backing format extension (BlockDriverState.backing_format[16], its NUL included). */
    static final int MAX_BACKING_FORMAT_BYTES = 16;

    /**
     * {@code name} (a backing file or format name read from an image, which its writer chose)
     * fit to be echoed into an error or a log line: control characters (a newline that forges
     * a log line, an ESC that drives a terminal, bidirectional overrides) escaped as a backslash, x and two
     * hex digits (u and four past 0xff), and a backslash as two.
     */
    static String printable(String name) {
        if (name == null) {
            return null;
        }
        StringBuilder b = null;
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            boolean escape = c == '\\' || Character.isISOControl(c) || c == '\u2028' || c == '\u2029'
                    || (c >= '\u202a' && c <= '\u202e') || (c >= '\u2066' && c <= '\u2069');
            if (escape && b == null) {
                b = new StringBuilder(name.length() + 16).append(name, 0, i);
            }
            if (b != null) {
                if (!escape) {
                    b.append(c);
                } else if (c == '\\') {
                    b.append("\\\\");
                } else if (c < 0x100) {
                    b.append(String.format("\\x%02x", (int) c));
                } else {
                    b.append(String.format("\\u%04x", (int) c));
                }
            }
        }
        return b == null ? name : b.toString();
    }

    static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }

    /** An {@link IllegalArgumentException} that names the image problem. */
    static IllegalArgumentException bad(String message) {
        return new IllegalArgumentException("qcow2: " + message);
    }

    boolean dirty() {
        return (incompatibleFeatures & INCOMPAT_DIRTY) != 0;
    }

    boolean corrupt() {
        return (incompatibleFeatures & INCOMPAT_CORRUPT) != 0;
    }

    @Override
    public String toString() {
        return "qcow2 v" + version + " size " + virtualSize + " cluster " + clusterSize + " refcount_order "
                + refcountOrder + (backingFile == null ? ""
                : " backing " + printable(backingFile) + " (" + printable(backingFormat) + ")");
    }
}
