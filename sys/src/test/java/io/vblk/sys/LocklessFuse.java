package io.vblk.sys;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * A file system whose every byte-range lock is refused, for tests of {@code locking=auto}: a
 * minimal FUSE server (the kernel's protocol, fuse.h 7.31, spoken over /dev/fuse in this JVM)
 * with one regular file, {@link #FILE}, of {@link #SIZE} zero bytes. It asks for POSIX locks
 * (FUSE_POSIX_LOCKS), so the kernel passes every lock request to it, and answers GETLK, SETLK and
 * SETLKW with the errno it was given, as a network or cluster file system without lock support
 * does. No real file system here refuses OFD locks; mounting needs root and /dev/fuse
 * ({@link #mount} returns null where either is missing).
 */
final class LocklessFuse implements AutoCloseable {
    static final String FILE = "image.raw";
    static final long SIZE = 1 << 20;

    private static final int SYS_MOUNT = 165;
    private static final int SYS_UMOUNT2 = 166;
    private static final int MNT_DETACH = 2;
    private static final long MS_NOSUID = 2;
    private static final long MS_NODEV = 4;

    private static final int LOOKUP = 1;
    private static final int FORGET = 2;
    private static final int GETATTR = 3;
    private static final int OPEN = 14;
    private static final int READ = 15;
    private static final int STATFS = 17;
    private static final int RELEASE = 18;
    private static final int FLUSH = 25;
    private static final int INIT = 26;
    private static final int OPENDIR = 27;
    private static final int RELEASEDIR = 29;
    private static final int GETLK = 31;
    private static final int SETLK = 32;
    private static final int SETLKW = 33;
    private static final int ACCESS = 34;
    private static final int INTERRUPT = 36;
    private static final int DESTROY = 38;
    private static final int BATCH_FORGET = 42;
    private static final int FUSE_POSIX_LOCKS = 1 << 1;
    private static final int ROOT = 1;
    private static final int NODE = 2;
    private static final int ENOENT = 2;
    private static final int ENOSYS = 38;

    final Path mountPoint;
    private final int dev;
    private final int lockErrno;
    private final Thread server;
    private volatile boolean closed;
    /** Lock requests the kernel passed on (a refusal comes from here, not from the VFS). */
    volatile int lockRequests;

    private LocklessFuse(Path mountPoint, int dev, int lockErrno) {
        this.mountPoint = mountPoint;
        this.dev = dev;
        this.lockErrno = lockErrno;
        this.server = new Thread(this::serve, "lockless-fuse");
        this.server.setDaemon(true);
    }

    /**
     * Mounts the file system on the (empty) directory {@code at}, refusing locks with {@code
     * lockErrno}; null where FUSE cannot be mounted here (no /dev/fuse, no CAP_SYS_ADMIN).
     */
    static LocklessFuse mount(Path at, int lockErrno) {
        int dev = Native.libc().open("/dev/fuse", Linux.O_RDWR | Linux.O_CLOEXEC, 0);
        if (dev < 0) {
            return null;
        }
        String options = "fd=" + dev + ",rootmode=40000,user_id=0,group_id=0,allow_other";
        NativeBuffer source = cString("lockless");
        NativeBuffer target = cString(at.toString());
        NativeBuffer type = cString("fuse");
        NativeBuffer data = cString(options);
        LocklessFuse fs = new LocklessFuse(at, dev, lockErrno);
        long rc = Native.syscall(SYS_MOUNT, source.address(), target.address(), type.address(),
                MS_NOSUID | MS_NODEV, data.address());
        java.lang.ref.Reference.reachabilityFence(source);
        java.lang.ref.Reference.reachabilityFence(target);
        java.lang.ref.Reference.reachabilityFence(type);
        java.lang.ref.Reference.reachabilityFence(data);
        if (rc < 0) {
            fs.closed = true;
            Native.libc().close(dev);
            return null;
        }
        // Served only from now on: a read of /dev/fuse before the mount attached it fails with
        // EPERM, which ended the server thread and left the first open on the mount waiting for
        // ever (a CI run hung so). The kernel queues INIT until someone reads it.
        fs.server.start();
        return fs;
    }

    private static NativeBuffer cString(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        NativeBuffer n = new NativeBuffer(b.length + 1);
        n.buffer().putBytes(0, b);
        n.buffer().putByte(b.length, (byte) 0);
        return n;
    }

    private void serve() {
        NativeBuffer in = new NativeBuffer(1 << 20 | 1 << 16);
        NativeBuffer out = new NativeBuffer(4096);
        {
            UnsafeBuffer r = in.buffer();
            UnsafeBuffer w = out.buffer();
            while (!closed) {
                long n = Native.libc().read(dev, in.address(), in.capacity());
                if (n < 0) {
                    int e = Native.errno();
                    if (e == 4 || e == 2) { // EINTR; ENOENT: a request interrupted before it was read
                        continue;
                    }
                    return; // ENODEV: unmounted
                }
                int opcode = r.getInt(4);
                long unique = r.getLong(8);
                long node = r.getLong(16);
                int arg = 40;
                w.setMemory(0, w.capacity(), (byte) 0);
                int length;
                int error = 0;
                switch (opcode) {
                    case INIT -> {
                        w.putInt(16, 7); // major
                        w.putInt(20, 31); // minor
                        w.putInt(24, r.getInt(arg + 8)); // max_readahead
                        w.putInt(28, FUSE_POSIX_LOCKS);
                        w.putShort(32, (short) 16); // max_background
                        w.putShort(34, (short) 12); // congestion_threshold
                        w.putInt(36, 1 << 17); // max_write
                        w.putInt(40, 1); // time_gran
                        length = 16 + 64;
                    }
                    case LOOKUP -> {
                        String name = cName(r, arg, (int) n - arg);
                        if (node == ROOT && name.equals(FILE)) {
                            w.putLong(16, NODE); // nodeid
                            attr(w, 16 + 40, NODE);
                            length = 16 + 128;
                        } else {
                            error = -ENOENT;
                            length = 16;
                        }
                    }
                    case GETATTR -> {
                        attr(w, 16 + 16, node);
                        length = 16 + 104;
                    }
                    case OPEN, OPENDIR -> length = 16 + 16;
                    case READ -> {
                        long offset = r.getLong(arg + 8);
                        int size = r.getInt(arg + 16);
                        int count = (int) Math.max(0, Math.min(Math.min(size, SIZE - offset), w.capacity() - 16));
                        length = 16 + count; // zeros
                    }
                    case STATFS -> {
                        w.putLong(16, 256); // blocks
                        w.putInt(16 + 40, 4096); // bsize
                        w.putInt(16 + 44, 255); // namelen
                        w.putInt(16 + 48, 4096); // frsize
                        length = 16 + 80;
                    }
                    case RELEASE, RELEASEDIR, FLUSH, ACCESS -> length = 16;
                    case GETLK, SETLK, SETLKW -> {
                        lockRequests++;
                        error = -lockErrno;
                        length = 16;
                    }
                    case FORGET, BATCH_FORGET, INTERRUPT -> {
                        continue; // no reply
                    }
                    case DESTROY -> length = 16;
                    default -> {
                        error = -ENOSYS;
                        length = 16;
                    }
                }
                w.putInt(0, length);
                w.putInt(4, error);
                w.putLong(8, unique);
                Native.libc().write(dev, out.address(), length);
            }
        }
    }

    /** A fuse_attr at {@code at}: the root directory or the one file. */
    private static void attr(UnsafeBuffer w, int at, long node) {
        boolean dir = node == ROOT;
        w.putLong(at, node); // ino
        w.putLong(at + 8, dir ? 0 : SIZE); // size
        w.putLong(at + 16, dir ? 0 : SIZE / 512); // blocks
        w.putInt(at + 60, dir ? 040755 : 0100644); // mode
        w.putInt(at + 64, dir ? 2 : 1); // nlink
        w.putInt(at + 80, 4096); // blksize
    }

    private static String cName(UnsafeBuffer r, int at, int max) {
        int end = at;
        while (end < at + max && r.getByte(end) != 0) {
            end++;
        }
        byte[] b = new byte[end - at];
        r.getBytes(at, b);
        return new String(b, StandardCharsets.UTF_8);
    }

    /** The file's path under the mount. */
    Path file() {
        return mountPoint.resolve(FILE);
    }

    @Override
    public void close() {
        closed = true;
        NativeBuffer target = cString(mountPoint.toString());
        Native.syscall(SYS_UMOUNT2, target.address(), MNT_DETACH, 0, 0, 0);
        java.lang.ref.Reference.reachabilityFence(target);
        Native.libc().close(dev); // aborts the connection: the server's read ends
        try {
            server.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
