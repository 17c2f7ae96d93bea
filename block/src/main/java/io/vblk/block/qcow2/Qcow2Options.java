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

    private Qcow2Options(boolean readOnly, boolean direct, int l2CacheTables, int maxBackingDepth, Locking locking) {
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
    }

    /** Writable, O_DIRECT, the default cache and chain depth. */
    public static Qcow2Options defaults() {
        return new Qcow2Options(false, true, DEFAULT_L2_CACHE_TABLES, DEFAULT_MAX_BACKING_DEPTH, Locking.ON);
    }

    public Qcow2Options readOnly(boolean value) {
        return new Qcow2Options(value, direct, l2CacheTables, maxBackingDepth, locking);
    }

    public Qcow2Options direct(boolean value) {
        return new Qcow2Options(readOnly, value, l2CacheTables, maxBackingDepth, locking);
    }

    /** L2 tables cached per driver: the bound on metadata memory is this times the cluster size. */
    public Qcow2Options l2CacheTables(int value) {
        return new Qcow2Options(readOnly, direct, value, maxBackingDepth, locking);
    }

    public Qcow2Options maxBackingDepth(int value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, value, locking);
    }

    /**
     * QEMU-compatible image locking of the image and every backing file ({@link io.vblk.block.ImageLocks}):
     * on (the default), off, or auto (on, unless the filesystem refuses OFD locks).
     */
    public Qcow2Options locking(Locking value) {
        return new Qcow2Options(readOnly, direct, l2CacheTables, maxBackingDepth, value);
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
                + ",max-backing-depth=" + maxBackingDepth + ",locking=" + locking.cliName();
    }
}
