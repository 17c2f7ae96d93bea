package io.vblk.block.qcow2;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;

import io.vblk.sys.NativeBuffer;

/**
 * The JVM's direct-memory pool, which every image of the process shares (its limit is
 * -XX:MaxDirectMemorySize, by default the heap's -Xmx). A driver takes what it may ever need
 * at open ({@link #allocate}: refused there, with a reason, when the pool is used up) so that a
 * disk already serving never fails for want of it because another, hostile, image filled the
 * pool (rev15a); what it takes later is optional and asked for only while there is room
 * ({@link #roomFor}), so that {@code Bits.reserveMemory}'s collection and sleeps never run on
 * an I/O thread other disks share.
 */
final class DirectMemory {
    /** The pool's limit in bytes. */
    static final long LIMIT = limit();
    private static final BufferPoolMXBean POOL = pool();

    private DirectMemory() {
    }

    /**
     * A buffer for {@code what} of image {@code image}, allocated at open; an
     * {@link IllegalStateException} that names the limit when the pool cannot give it.
     */
    static NativeBuffer allocate(int bytes, int alignment, String image, String what) {
        try {
            return new NativeBuffer(bytes, alignment);
        } catch (OutOfMemoryError e) {
            throw exhausted(image, bytes, what, e);
        }
    }

    /** The open-time refusal for {@code bytes} of {@code what} (see {@link #allocate}). */
    static Exhausted exhausted(String image, long bytes, String what, OutOfMemoryError cause) {
        return exhausted(image, bytes + " bytes of direct memory for " + what, cause);
    }

    /** The same for {@code what} (its size unknown). */
    static Exhausted exhausted(String image, String what, OutOfMemoryError cause) {
        return new Exhausted("qcow2 " + image + ": cannot reserve " + what + ": the JVM's direct-memory pool,"
                + " shared by every disk, is used up (" + used() + " of its "
                + LIMIT + "-byte limit, -XX:MaxDirectMemorySize, by default -Xmx); raise the limit, lower the"
                + " export's l2_cache_tables, or serve fewer images", cause);
    }

    /** The direct-memory pool could not give what an open (or a reload) needs. */
    static final class Exhausted extends IllegalStateException {
        private static final long serialVersionUID = 1L;

        Exhausted(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * Whether {@code bytes} more fit in the pool with {@code LIMIT / 16} to spare: an optional
     * allocation asked for only then cannot fail but for a race, and never takes the last of
     * the pool from an open.
     */
    static boolean roomFor(long bytes) {
        long used = used();
        return used >= 0 && bytes <= LIMIT - LIMIT / 16 - used;
    }

    /** Direct memory in use (reserved), or -1 when the JVM does not tell. */
    static long used() {
        return POOL == null ? -1 : POOL.getMemoryUsed();
    }

    private static BufferPoolMXBean pool() {
        for (BufferPoolMXBean b : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)) {
            if ("direct".equals(b.getName())) {
                return b;
            }
        }
        return null;
    }

    private static long limit() {
        try {
            com.sun.management.HotSpotDiagnosticMXBean hs =
                    ManagementFactory.getPlatformMXBean(com.sun.management.HotSpotDiagnosticMXBean.class);
            long v = Long.parseLong(hs.getVMOption("MaxDirectMemorySize").getValue());
            if (v > 0) {
                return v;
            }
        } catch (RuntimeException | LinkageError e) {
            // not HotSpot: the default below
        }
        return Runtime.getRuntime().maxMemory();
    }
}
