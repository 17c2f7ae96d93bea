package io.vblk.sys;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.function.Consumer;

/**
 * QEMU-compatible image locking: the OFD byte-range locks QEMU's file-posix driver takes on an
 * image file (block/file-posix.c), so that vblk and QEMU, qemu-storage-daemon, qemu-img, qemu-io
 * or a second vblk never both write one image.
 *
 * <p>QEMU's permissions are bits ({@link #CONSISTENT_READ} 0, {@link #WRITE} 1,
 * {@link #WRITE_UNCHANGED} 2, {@link #RESIZE} 3, include/block/block-common.h). A user of the
 * file holds a shared lock on byte {@code 100 + i} while it uses permission i, and on byte
 * {@code 200 + i} while it does not let others have permission i. Taking a use therefore means:
 * lock the bytes (first, so that two openers racing each see the other), then test that nobody
 * else holds {@code 200 + i} for a permission i taken, and nobody holds {@code 100 + i} for a
 * permission i not shared. The refusals read as QEMU's ({@code Failed to get "write" lock},
 * {@code Failed to get shared "write" lock}) and name the holder.
 *
 * <p>The locks live on the open file description ({@link OfdLock}): they are released when the
 * image's descriptor is closed (export removal, device close) or the process dies, and a second
 * open of the same file in this process conflicts like another process would. Taken once, right
 * after open and before anything is written; never on the data path.
 */
public final class ImageLock {
    public static final int CONSISTENT_READ = 0x1;
    public static final int WRITE = 0x2;
    public static final int WRITE_UNCHANGED = 0x4;
    public static final int RESIZE = 0x8;
    static final int PERM_COUNT = 4;
    /** Byte {@code PERM_BASE + i}: "I use permission i". */
    public static final long PERM_BASE = 100;
    /** Byte {@code SHARED_BASE + i}: "I do not share permission i". */
    public static final long SHARED_BASE = 200;
    /**
     * The system property that bounds, in milliseconds, how long a conflict whose holder no live
     * process shows is looked at again (a killed process's io_uring teardown): {@value #DEAD_HOLDER_WAIT_DEFAULT_MS}
     * by default, 0 to refuse at once.
     */
    public static final String DEAD_HOLDER_WAIT_PROPERTY = "vblk.lock.deadHolderWaitMs";
    static final long DEAD_HOLDER_WAIT_DEFAULT_MS = 10_000;
    private static final String[] NAMES = {"consistent read", "write", "write unchanged", "resize"};

    /** A writer's use (a writable export): reads, writes and resizes; others may only read. */
    public static final Use WRITER = new Use(CONSISTENT_READ | WRITE | RESIZE, CONSISTENT_READ | WRITE_UNCHANGED);
    /**
     * A reader's use (a read-only export, a backing file): reads, and lets others read but not
     * write or resize under it (as a QEMU guest device without share-rw, and a qcow2 backing child).
     */
    public static final Use READER = new Use(CONSISTENT_READ, CONSISTENT_READ | WRITE_UNCHANGED);
    /**
     * An inactive image's use (QEMU's BDRV_O_INACTIVE: a migration's destination before it runs,
     * its source after it handed over): consistent read only, sharing everything, so that the
     * one active writer keeps its image while another backend waits to take it over.
     */
    public static final Use INACTIVE = new Use(CONSISTENT_READ, CONSISTENT_READ | WRITE | WRITE_UNCHANGED | RESIZE);

    /** What a user takes ({@code perm}) and what it lets others take ({@code shared}). */
    public static final class Use {
        final int perm;
        final int shared;

        public Use(int perm, int shared) {
            if ((perm & ~0xf) != 0 || (shared & ~0xf) != 0) {
                throw new IllegalArgumentException("permissions are bits 0..3: perm 0x" + Integer.toHexString(perm)
                        + ", shared 0x" + Integer.toHexString(shared));
            }
            this.perm = perm;
            this.shared = shared;
        }

        @Override
        public String toString() {
            return "perm " + names(perm) + ", shared " + names(shared);
        }
    }

    /** QEMU's {@code locking} option of the file driver. */
    public enum Locking {
        /** Lock, and refuse the image when the locks cannot be taken, whatever the reason (the default). */
        ON,
        /** Take no locks and test none: for a filesystem that refuses OFD locks, or a deliberate second user. */
        OFF,
        /** Lock; where the filesystem refuses OFD locks (EINVAL, EOPNOTSUPP, ENOLCK) go on unlocked, saying so once. */
        AUTO;

        /** Parses {@code on}, {@code off} or {@code auto} (case-insensitive). */
        public static Locking parse(String s) {
            if (s != null) {
                for (Locking l : values()) {
                    if (l.name().equalsIgnoreCase(s.trim())) {
                        return l;
                    }
                }
            }
            throw new IllegalArgumentException("locking must be on, off or auto: " + s);
        }

        /** The name on command lines and in the control protocol. */
        public String cliName() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /** The image is in use by someone whose use conflicts with ours. */
    public static final class LockedException extends IllegalArgumentException {
        private static final long serialVersionUID = 1L;
        private final String holder;
        private final long dev;
        private final long ino;
        private final boolean reader;

        LockedException(String message, String holder, long dev, long ino, boolean reader) {
            super(message);
            this.holder = holder;
            this.dev = dev;
            this.ino = ino;
            this.reader = reader;
        }

        /** st_dev of the file refused (-1 when unknown). */
        public long dev() {
            return dev;
        }

        /** st_ino of the file refused (-1 when unknown). */
        public long ino() {
            return ino;
        }

        /** Whether the refused use was a reader's. */
        public boolean reader() {
            return reader;
        }

        /** Whether the conflicting lock is held by this process (another export, another open). */
        public boolean heldByThisProcess() {
            // The whole name with our pid: another process may call itself "this process".
            return holder.equals(LockHolder.thisProcess());
        }

        /** Who holds the conflicting lock, e.g. {@code "qemu-storage-daemon (pid 4242)"}. */
        public String holder() {
            return holder;
        }
    }

    private ImageLock() {
    }

    /**
     * Takes {@code use} on the file open as {@code fd} ({@code path} names it in messages).
     * Returns true when the locks are held, false when none were taken ({@link Locking#OFF}, or
     * {@link Locking#AUTO} on a filesystem that refuses them, reported once to {@code log}).
     *
     * @throws LockedException when another user's locks conflict (the locks this call took are
     *         dropped again)
     * @throws NativeException when the kernel refuses a lock and {@code locking} is {@link Locking#ON}
     */
    public static boolean acquire(int fd, Path path, Use use, Locking locking, Consumer<String> log) {
        if (locking == Locking.OFF) {
            return false;
        }
        return whileHolderUnseen(path, log, () -> attempt(fd, path, use, locking, log));
    }

    /** {@link #DEAD_HOLDER_WAIT_PROPERTY} in nanoseconds (the default for a value that is not a number >= 0). */
    static long deadHolderWaitNs() {
        long ms = DEAD_HOLDER_WAIT_DEFAULT_MS;
        String v = System.getProperty(DEAD_HOLDER_WAIT_PROPERTY);
        if (v != null) {
            try {
                ms = Math.max(0, Math.min(Long.parseLong(v.trim()), 3_600_000L));
            } catch (NumberFormatException e) {
                // The default, then.
            }
        }
        return ms * 1_000_000L;
    }

    /**
     * Runs {@code attempt} again while it is refused by a holder no live process shows: the open
     * file description of a process that died (SIGKILL) whose io_uring ring still holds the file
     * (registered files, in-flight requests) until the kernel's asynchronous ring teardown
     * (io_ring_exit_work) ends: some 20-40 ms here, longer on a loaded machine or with a request
     * the kernel must wait out. A systemd restart of a crashed daemon lands in that window. Says
     * so once to {@code log}; looks less and less often (each refusal walks /proc: a holder that
     * never shows, e.g. a description passed over a socket nobody reads, costs a few walks), for
     * at most {@link #DEAD_HOLDER_WAIT_PROPERTY}. A live holder is refused at once.
     */
    private static <T> T whileHolderUnseen(Path path, Consumer<String> log, java.util.function.Supplier<T> attempt) {
        long waitNs = deadHolderWaitNs();
        long deadline = System.nanoTime() + waitNs;
        long pauseMs = 20;
        boolean said = false;
        while (true) {
            try {
                return attempt.get();
            } catch (LockedException e) {
                if (!e.holder().equals(LockHolder.UNKNOWN) || System.nanoTime() - deadline > 0) {
                    throw e;
                }
                if (!said && log != null) {
                    said = true;
                    log.accept("vblk: " + path + ": locked by no live process (a killed process's io_uring teardown still "
                            + "holds it); waiting up to " + waitNs / 1_000_000 + " ms for the kernel to release it");
                }
                try {
                    Thread.sleep(pauseMs);
                    pauseMs = Math.min(pauseMs * 2, 800);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw e;
                }
            }
        }
    }

    private static boolean attempt(int fd, Path path, Use use, Locking locking, Consumer<String> log) {
        for (int i = 0; i < PERM_COUNT; i++) {
            int bit = 1 << i;
            int rc = 0;
            if ((use.perm & bit) != 0) {
                rc = OfdLock.lockShared(fd, PERM_BASE + i, 1);
            }
            if (rc == 0 && (use.shared & bit) == 0) {
                rc = OfdLock.lockShared(fd, SHARED_BASE + i, 1);
            }
            if (rc == -Errno.EAGAIN || rc == -Errno.EACCES) {
                // Someone holds an exclusive lock on the byte: not QEMU's way, but a conflict all the same.
                release(fd);
                throw refusal(fd, path, (use.perm & bit) != 0 ? PERM_BASE + i : SHARED_BASE + i, i, false, use);
            }
            if (rc < 0) {
                release(fd);
                if (locking == Locking.AUTO && unsupported(rc)) {
                    log.accept("vblk: " + path + ": the filesystem refuses OFD locks (errno " + -rc
                            + "); served without image locking (locking=auto)");
                    return false;
                }
                throw new NativeException(-rc, "fcntl", fd, "F_OFD_SETLK", path,
                        "(image locking; locking=auto or off for a filesystem without OFD locks)");
            }
        }
        for (int i = 0; i < PERM_COUNT; i++) {
            int bit = 1 << i;
            if ((use.perm & bit) != 0) {
                check(fd, path, SHARED_BASE + i, i, false, use);
            }
        }
        for (int i = 0; i < PERM_COUNT; i++) {
            if ((use.shared & (1 << i)) == 0) {
                check(fd, path, PERM_BASE + i, i, true, use);
            }
        }
        return true;
    }

    private static void check(int fd, Path path, long offset, int perm, boolean shared, Use use) {
        int rc = OfdLock.test(fd, offset, 1);
        if (rc == OfdLock.F_UNLCK) {
            return;
        }
        release(fd);
        if (rc < 0) {
            throw new NativeException(-rc, "fcntl", fd, "F_OFD_GETLK", path, offset);
        }
        throw refusal(fd, path, offset, perm, shared, use);
    }

    private static LockedException refusal(int fd, Path path, long offset, int perm, boolean shared, Use use) {
        long dev = -1;
        long ino = -1;
        String holder = LockHolder.UNKNOWN;
        try {
            Map<String, Object> a = Files.readAttributes(Path.of("/proc/self/fd/" + fd), "unix:dev,ino");
            dev = (Long) a.get("dev");
            ino = (Long) a.get("ino");
            holder = LockHolder.describe(LockHolder.kernelDev(fd, dev), ino, offset);
        } catch (IOException | RuntimeException e) {
            // The holder stays unknown; the refusal stands.
        }
        return new LockedException("Failed to get " + (shared ? "shared " : "") + "\"" + NAMES[perm] + "\" lock on "
                + path + ": held by " + holder + ". Is another process using the image? (--locking off, or locking: \"off\""
                + " in JSON, skips this check)",
                holder, dev, ino, use.perm == CONSISTENT_READ);
    }

    /**
     * Switches the file open as {@code fd} from the use {@code from} (held, taken by
     * {@link #acquire}) to {@code to}: the bytes {@code to} needs are locked first, then its
     * conflicts tested, and only then the bytes {@code from} held and {@code to} does not are
     * dropped. A refusal leaves exactly {@code from}'s locks in place, so an inactive image stays
     * inactive when another process still writes. Nothing for {@link Locking#OFF}.
     *
     * @throws LockedException when another user's locks conflict with {@code to} (the holder named)
     * @throws NativeException when the kernel refuses a lock or a test
     */
    public static void change(int fd, Path path, Use from, Use to, Locking locking) {
        if (locking == Locking.OFF) {
            return;
        }
        whileHolderUnseen(path, null, () -> {
            changeOnce(fd, path, from, to);
            return null;
        });
    }

    private static void changeOnce(int fd, Path path, Use from, Use to) {
        for (int i = 0; i < PERM_COUNT; i++) {
            int bit = 1 << i;
            if ((to.perm & bit) != 0) {
                lockOrRestore(fd, path, PERM_BASE + i, i, false, from, to);
            }
            if ((to.shared & bit) == 0) {
                lockOrRestore(fd, path, SHARED_BASE + i, i, true, from, to);
            }
        }
        for (int i = 0; i < PERM_COUNT; i++) {
            int bit = 1 << i;
            if ((to.perm & bit) != 0 && (from.perm & bit) == 0) {
                testOrRestore(fd, path, SHARED_BASE + i, i, false, from, to);
            }
            if ((to.shared & bit) == 0 && (from.shared & bit) != 0) {
                testOrRestore(fd, path, PERM_BASE + i, i, true, from, to);
            }
        }
        dropUnused(fd, to);
    }

    private static void lockOrRestore(int fd, Path path, long offset, int perm, boolean shared, Use from, Use to) {
        int rc = OfdLock.lockShared(fd, offset, 1);
        if (rc == 0) {
            return;
        }
        dropUnused(fd, from);
        if (rc == -Errno.EAGAIN || rc == -Errno.EACCES) {
            throw refusal(fd, path, offset, perm, shared, to);
        }
        throw new NativeException(-rc, "fcntl", fd, "F_OFD_SETLK", path, "(image locking)");
    }

    private static void testOrRestore(int fd, Path path, long offset, int perm, boolean shared, Use from, Use to) {
        int rc = OfdLock.test(fd, offset, 1);
        if (rc == OfdLock.F_UNLCK) {
            return;
        }
        dropUnused(fd, from);
        if (rc < 0) {
            throw new NativeException(-rc, "fcntl", fd, "F_OFD_GETLK", path, offset);
        }
        throw refusal(fd, path, offset, perm, shared, to);
    }

    /** Drops the lock bytes {@code use} does not hold (taking none). */
    private static void dropUnused(int fd, Use use) {
        for (int i = 0; i < PERM_COUNT; i++) {
            int bit = 1 << i;
            if ((use.perm & bit) == 0) {
                OfdLock.unlock(fd, PERM_BASE + i, 1);
            }
            if ((use.shared & bit) != 0) {
                OfdLock.unlock(fd, SHARED_BASE + i, 1);
            }
        }
    }

    /** Drops every lock byte this description holds (the file stays open). */
    public static void release(int fd) {
        OfdLock.unlock(fd, PERM_BASE, SHARED_BASE + PERM_COUNT - PERM_BASE);
    }

    private static boolean unsupported(int rc) {
        return rc == -Errno.EINVAL || rc == -Errno.EOPNOTSUPP || rc == -Errno.ENOLCK || rc == -Errno.ENOSYS;
    }

    static String names(int bits) {
        StringBuilder s = new StringBuilder();
        for (int i = 0; i < PERM_COUNT; i++) {
            if ((bits & (1 << i)) != 0) {
                s.append(s.length() == 0 ? "" : ", ").append(NAMES[i]);
            }
        }
        return s.length() == 0 ? "none" : s.toString();
    }
}
