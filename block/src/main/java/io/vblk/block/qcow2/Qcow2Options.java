package io.vblk.block.qcow2;

import io.vblk.sys.ImageLock.Locking;

/** How a qcow2 image is opened. Immutable; {@code with*} methods return copies. */
public final class Qcow2Options {
    /** Default L2 tables kept in memory (32 tables of 64 KiB clusters map 16 GiB). */
    public static final int DEFAULT_L2_CACHE_TABLES = 32;
    /** Longest backing chain followed (QEMU has no fixed limit; loops are refused anyway). */
    public static final int DEFAULT_MAX_BACKING_DEPTH = 16;

    private final boolean readOnly;
    private final boolean direct;
    private final int l2CacheTables;
    private final int maxBackingDepth;
    private final Locking locking;
    private final boolean networkBacking;
    private final java.nio.file.Path backingDir;
    /** A migration's destination: opened inactive (see {@link #incoming(boolean)}). */
    private final boolean incoming;

    private Qcow2Options(boolean readOnly, boolean direct, int l2CacheTables, int maxBackingDepth, Locking locking) {
        this(readOnly, direct, l2CacheTables, maxBackingDepth, locking, false, null, false);
    }

    private Qcow2Options(boolean readOnly, boolean direct, int l2CacheTables, int maxBackingDepth, Locking locking,
                         boolean networkBacking, java.nio.file.Path backingDir, boolean incoming) {
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
    }

    /** Writable, O_DIRECT, the default cache and chain depth. */
    public static Qcow2Options defaults() {
        return new Qcow2Options(false, true, DEFAULT_L2_CACHE_TABLES, DEFAULT_MAX_BACKING_DEPTH, Locking.ON);
    }

    public Qcow2Options readOnly(boolean value) {
        return new Qcow2Options(value, direct, l2CacheTables, maxBackingDepth, locking, networkBacking, backingDir, incoming);
    }

    public Qcow2Options direct(boolean value) {
        return new Qcow2Options(readOnly, value, l2CacheTables, maxBackingDepth, locking, networkBacking, backingDir, incoming);
    }

    /** L2 tables cached per driver: the bound on metadata memory is this times the cluster size. */
    public Qcow2Options l2CacheTables(int value) {
        return new Qcow2Options(readOnly, direct, value, maxBackingDepth, locking, networkBacking, backingDir, incoming);
    }

    public Qcow2Options maxBackingDepth(int value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, value, locking, networkBacking, backingDir, incoming);
    }

    /**
     * QEMU-compatible image locking of the image and every backing file ({@link io.vblk.block.ImageLocks}):
     * on (the default), off, or auto (on, unless the filesystem refuses OFD locks).
     */
    public Qcow2Options locking(Locking value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, value, networkBacking, backingDir, incoming);
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
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, locking, value, backingDir, incoming);
    }

    /**
     * Confines local backing files to {@code dir}: a backing file (after symbolic links and
     * {@code ..} are resolved) must lie under it, or the open is refused. Null (the default)
     * follows a backing name to any regular file or block device the process may read, as
     * QEMU does.
     */
    public Qcow2Options backingDir(java.nio.file.Path dir) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, locking, networkBacking, dir, incoming);
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
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, locking, networkBacking, backingDir, value);
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
