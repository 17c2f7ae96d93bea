package io.vblk.block.qcow2;

import io.vblk.block.NetworkTimeouts;
import io.vblk.sys.ImageLock.Locking;

/**
 * How a qcow2 image is opened. Immutable; {@code with*} methods return copies.
 *
 * <h2>Memory of a backing chain</h2>
 * An image decides its cluster size (up to 2 MiB) and its chain depth (up to
 * {@link #maxBackingDepth()}), so the driver's direct memory is bounded by these options, not by
 * the images. Each L2 table and bounce buffer is allocated on first use, so an open allocates
 * none: per level, an open takes the L1 table the header names, the refcount table for a
 * writable image only (both bounded at open: {@code Qcow2AllocationBoundsTest}), a header sector
 * and, for the writable top image only, one refcount block. In use:
 * <ul>
 *   <li>the top image caches at most {@link #l2CacheTables()} L2 tables (cluster size each) and
 *       32 MiB of bounce buffers;</li>
 *   <li>each backing level, read only where the layers above have no cluster, caches at most
 *       {@link #backingL2CacheTables(int)} tables ({@value #BACKING_L2_CACHE_BYTES} bytes' worth, at
 *       least 2, at most {@link #l2CacheTables()}) and 4 MiB of bounce buffers (at least one:
 *       compressed clusters only).</li>
 * </ul>
 * Every level takes its L2 cache (no more tables than its virtual size has, at least 2) and its
 * first bounce buffers (2 for the top, 1 per backing level) at open, from the direct-memory pool
 * every disk shares, so that a disk serving never fails later for want of it (rev15a). A chain
 * of 16 backing levels of small 2 MiB-cluster images with the defaults: about 200 MiB at open
 * (40 MiB before the cache and bounce buffers were taken at open; 71 MiB while every level kept
 * its refcount table, 1191 MiB with every level's whole cache: {@code Qcow2ChainMemoryTest}); in use, L2 tables and bounce
 * buffers take at most 64 + 32 MiB for the top image and 4 + 6 MiB per backing level, 256 MiB
 * in all (was 96 MiB per level, 1.6 GiB). The top image's L1 table is at most 32 MiB (QEMU's
 * limit); the backing levels' L1 tables and every level's snapshots' L1 tables together at most
 * {@link #CHAIN_L1_BUDGET_BYTES} (a chain over it is refused at open, naming the image), where 16
 * levels of 32 MiB used to take 544 MiB. A read-only level keeps no refcount table (it reads it
 * once at open, through a 64 KiB window, to know its refcount blocks as metadata). The clusters
 * that hold metadata are kept as runs on the heap: the backing levels' together at most
 * {@link #CHAIN_METADATA_SET_BUDGET_BYTES}.
 */
public final class Qcow2Options {
    /** Default L2 tables kept in memory (32 tables of 64 KiB clusters map 16 GiB). */
    public static final int DEFAULT_L2_CACHE_TABLES = 32;
    /**
     * The L2 cache of one backing level in bytes (rounded to whole tables, at least 2): 16 tables
     * of 64 KiB clusters (8 GiB mapped), 2 tables of 2 MiB clusters (1 TiB mapped).
     */
    public static final int BACKING_L2_CACHE_BYTES = 1 << 20;
    /** Longest backing chain followed (QEMU has no fixed limit; loops are refused anyway). */
    public static final int DEFAULT_MAX_BACKING_DEPTH = 16;
    /**
     * The bytes of L1 tables one chain reads at open beyond its top image's own (which QEMU
     * bounds at 32 MiB): the backing levels' L1 tables, kept for the driver's life, and the
     * internal snapshots' L1 tables of every level, read once to learn the L2 tables they name
     * and not kept. Each may be 32 MiB (QEMU's limit), so 16 hostile levels, or one image's
     * 65536 snapshots, would otherwise take 512 MiB (or read 2 TiB) at open. An image that
     * takes the chain over this is refused at open, with its name. 64 MiB holds the L1 tables
     * of 16 backing levels of 2 TiB disks with 64 KiB clusters 128 times over (32 KiB each);
     * only 512-byte or 4 KiB clusters under very large disks come near it.
     */
    public static final long CHAIN_L1_BUDGET_BYTES = 64L << 20;
    /**
     * The heap the backing levels' sets of metadata clusters (their L2 tables and refcount
     * blocks, as runs) may take together, kept for the driver's life; the top image's is its own
     * (QEMU's limits bound it: 4 Mi L2 tables and 1 Mi refcount blocks, 20 MiB). The L2 tables
     * are bounded by {@link #CHAIN_L1_BUDGET_BYTES} already (32 MiB at most); a level's refcount
     * table may name 1 Mi blocks apart from one another (4 MiB), and 16 hostile levels took 64
     * MiB more. An image that takes the chain over this is refused at open, with its name. A
     * real image's blocks are few (one per 2 GiB of 64 KiB clusters) and its tables are runs.
     */
    public static final long CHAIN_METADATA_SET_BUDGET_BYTES = 40L << 20;

    private final boolean readOnly;
    private final boolean direct;
    private final int l2CacheTables;
    private final int maxBackingDepth;
    private final Locking locking;
    private final boolean networkBacking;
    private final java.nio.file.Path backingDir;
    /** A migration's destination: opened inactive (see {@link #incoming(boolean)}). */
    private final boolean incoming;
    /** How a network backing image waits for its server ({@link #networkTimeouts(NetworkTimeouts)}). */
    private final NetworkTimeouts networkTimeouts;

    private Qcow2Options(boolean readOnly, boolean direct, int l2CacheTables, int maxBackingDepth, Locking locking) {
        this(readOnly, direct, l2CacheTables, maxBackingDepth, locking, false, null, false, NetworkTimeouts.DEFAULTS);
    }

    private Qcow2Options(boolean readOnly, boolean direct, int l2CacheTables, int maxBackingDepth, Locking locking,
                         boolean networkBacking, java.nio.file.Path backingDir, boolean incoming,
                         NetworkTimeouts networkTimeouts) {
        if (l2CacheTables < 2 || l2CacheTables > 65536) {
            throw new IllegalArgumentException("l2CacheTables must be 2..65536: " + l2CacheTables);
        }
        if (maxBackingDepth < 0 || maxBackingDepth > 64) {
            throw new IllegalArgumentException("maxBackingDepth must be 0..64: " + maxBackingDepth);
        }
        this.readOnly = readOnly;
        this.direct = direct;
        this.l2CacheTables = l2CacheTables;
        this.maxBackingDepth = maxBackingDepth;
        this.locking = java.util.Objects.requireNonNull(locking, "locking");
        this.networkBacking = networkBacking;
        this.backingDir = backingDir;
        this.incoming = incoming;
        this.networkTimeouts = java.util.Objects.requireNonNull(networkTimeouts, "networkTimeouts");
    }

    /** Writable, O_DIRECT, the default cache and chain depth. */
    public static Qcow2Options defaults() {
        return new Qcow2Options(false, true, DEFAULT_L2_CACHE_TABLES, DEFAULT_MAX_BACKING_DEPTH, Locking.ON);
    }

    public Qcow2Options readOnly(boolean value) {
        return new Qcow2Options(value, direct, l2CacheTables, maxBackingDepth, locking, networkBacking, backingDir, incoming, networkTimeouts);
    }

    public Qcow2Options direct(boolean value) {
        return new Qcow2Options(readOnly, value, l2CacheTables, maxBackingDepth, locking, networkBacking, backingDir, incoming, networkTimeouts);
    }

    /**
     * L2 tables the top image caches: its bound on L2 memory is this times its cluster size. Each
     * backing level caches far fewer ({@link #backingL2CacheTables(int)}); tables are allocated
     * at open (no more than the virtual size has).
     */
    public Qcow2Options l2CacheTables(int value) {
        return new Qcow2Options(readOnly, direct, value, maxBackingDepth, locking, networkBacking, backingDir, incoming, networkTimeouts);
    }

    public Qcow2Options maxBackingDepth(int value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, value, locking, networkBacking, backingDir, incoming, networkTimeouts);
    }

    /**
     * QEMU-compatible image locking of the image and every backing file ({@link io.vblk.block.ImageLocks}):
     * on (the default), off, or auto (on, unless the filesystem refuses OFD locks).
     */
    public Qcow2Options locking(Locking value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, value, networkBacking, backingDir, incoming, networkTimeouts);
    }

    /**
     * Whether a backing name that is a network address ({@code nbd://}, {@code nbd+unix://},
     * {@code rbd:}), read from an image's header, is followed. Off by default: the image chose
     * the address, so following it lets an image make the daemon connect to any host or Unix
     * socket. When on, an {@code rbd:} backing name must still carry no options ({@code :KEY=VALUE},
     * {@code conf}, {@code id}: those would be Ceph settings chosen by the image); it is opened
     * with librados' default configuration.
     */
    public Qcow2Options networkBacking(boolean value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, locking, value, backingDir, incoming, networkTimeouts);
    }

    /**
     * Confines local backing files to {@code dir}: a backing file (after symbolic links and
     * {@code ..} are resolved) must lie under it, or the open is refused. Null (the default)
     * follows a backing name to any regular file or block device the process may read, as
     * QEMU does.
     */
    public Qcow2Options backingDir(java.nio.file.Path dir) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, locking, networkBacking, dir, incoming, networkTimeouts);
    }

    /** Whether network backing names are followed ({@link #networkBacking(boolean)}). */
    /**
     * A live migration's destination (QEMU's {@code -incoming}, BDRV_O_INACTIVE): a writable
     * image opens inactive. It takes the locks of a reader that lets others write
     * ({@link io.vblk.sys.ImageLock#INACTIVE}) while the source still writes the file, writes
     * nothing (not the rounding of the file to whole clusters, no header, no refcount), refuses
     * requests, and trusts none of the metadata it read: {@link Qcow2Driver#activate()} takes
     * the writer's locks and reads everything again. Backing files are read-only either way.
     * Ignored for a read-only image.
     */
    public Qcow2Options incoming(boolean value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, locking, networkBacking, backingDir, value, networkTimeouts);
    }

    /**
     * How a network backing image ({@link #networkBacking(boolean)}) waits for its server: the
     * export's own settings, so that an operator's connect, request and retry times reach every
     * connection the export makes, not only those to its top image (the defaults otherwise).
     */
    public Qcow2Options networkTimeouts(NetworkTimeouts value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, locking, networkBacking, backingDir, incoming,
                value);
    }

    /** See {@link #networkTimeouts(NetworkTimeouts)}. */
    public NetworkTimeouts networkTimeouts() {
        return networkTimeouts;
    }

    /** See {@link #incoming(boolean)}. */
    public boolean incoming() {
        return incoming;
    }

    public boolean networkBacking() {
        return networkBacking;
    }

    /** The directory local backing files are confined to, or null ({@link #backingDir(java.nio.file.Path)}). */
    public java.nio.file.Path backingDir() {
        return backingDir;
    }

    public Locking locking() {
        return locking;
    }

    public boolean readOnly() {
        return readOnly;
    }

    public boolean direct() {
        return direct;
    }

    public int l2CacheTables() {
        return l2CacheTables;
    }

    /**
     * L2 tables cached by a backing level of {@code clusterSize}-byte clusters: a backing file is
     * read-only and read only where the layers above have no cluster, so it gets a small fixed
     * share ({@link #BACKING_L2_CACHE_BYTES}, at least 2 tables, at most {@link #l2CacheTables()}).
     */
    public int backingL2CacheTables(int clusterSize) {
        return Math.max(2, Math.min(l2CacheTables, BACKING_L2_CACHE_BYTES / clusterSize));
    }

    public int maxBackingDepth() {
        return maxBackingDepth;
    }

    @Override
    public String toString() {
        return (readOnly ? "ro" : "rw") + (direct ? ",direct" : ",buffered") + ",l2-cache=" + l2CacheTables
                + ",max-backing-depth=" + maxBackingDepth + ",locking=" + locking.cliName()
                + (networkBacking ? ",network-backing" : "") + (incoming ? ",incoming" : "") + (backingDir == null ? "" : ",backing-dir=" + backingDir);
    }
}
