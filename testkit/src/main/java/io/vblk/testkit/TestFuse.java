package io.vblk.testkit;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * A file system of one regular file, {@link #FILE}, for tests that need what no local file system
 * does: a minimal FUSE server (the kernel's protocol, fuse.h 7.31, spoken over /dev/fuse in this
 * JVM). Two behaviours, chosen at mount:
 * <ul>
 * <li>{@link #refusingLocks}: it asks for POSIX locks (FUSE_POSIX_LOCKS), so the kernel passes
 * every lock request to it, and answers GETLK, SETLK and SETLKW with the errno it was given, as
 * a network or cluster file system without lock support does;</li>
 * <li>{@link #stalling}: reads are answered with {@link #fill} bytes, or, while {@link
 * #holdReads} is on, held unanswered (a server that stopped answering: a hung FUSE or network
 * file system) until {@link #answerHeld} answers them; O_DIRECT reads stay asynchronous
 * (FUSE_ASYNC_DIO), so Linux AIO and io_uring have them in flight without a thread blocked in
 * the submission.</li>
 * </ul>
 * Mounting needs root and /dev/fuse ({@code mount} returns null where either is missing). Closing
 * answers the reads still held, unmounts and ends the server.
 */
public final class TestFuse implements AutoCloseable {
    /** The one file's name. */
    public static final String FILE = "image.raw";

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
    private static final int FUSE_ASYNC_DIO = 1 << 15;
    private static final int ROOT = 1;
    private static final int NODE = 2;
    private static final int ENOENT = 2;
    private static final int ENOSYS = 38;
    /** The largest read the kernel sends (32 pages, its default max_pages) and its header. */
    private static final int MAX_READ = 128 << 10;

    /** The directory it is mounted on. */
    public final Path mountPoint;
    private final int dev;
    private final long size;
    /** The errno lock requests get, or 0: locks are left to the kernel (no FUSE_POSIX_LOCKS). */
    private final int lockErrno;
    private final Thread server;
    private volatile boolean closed;
    /** Lock requests the kernel passed on (a refusal comes from here, not from the VFS). */
    private volatile int lockRequests;
    private volatile byte fill;
    private volatile boolean holding;
    /** Reads held unanswered: {unique, size} (under this). */
    private final List<long[]> held = new ArrayList<>();
    private final NativeBuffer out = new NativeBuffer(16 + MAX_READ);

    private TestFuse(Path mountPoint, int dev, long size, int lockErrno) {
        this.mountPoint = mountPoint;
        this.dev = dev;
        this.size = size;
        this.lockErrno = lockErrno;
        this.server = new Thread(this::serve, "test-fuse");
        this.server.setDaemon(true);
    }

    /**
     * Mounts on the (empty) directory {@code at} a file of 1 MiB of zeros whose every lock request
     * is refused with {@code lockErrno}; null where FUSE cannot be mounted here.
     */
    public static TestFuse refusingLocks(Path at, int lockErrno) {
        if (lockErrno <= 0) {
            throw new IllegalArgumentException("an errno, not " + lockErrno);
        }
        return mount(at, 1 << 20, lockErrno);
    }

    /**
     * Mounts on the (empty) directory {@code at} a file of {@code size} bytes, read-only in effect
     * (writes are refused), whose reads can be held ({@link #holdReads}); null where FUSE cannot
     * be mounted here.
     */
    public static TestFuse stalling(Path at, long size) {
        return mount(at, size, 0);
    }

    private static TestFuse mount(Path at, long size, int lockErrno) {
        int dev = Native.libc().open("/dev/fuse", Linux.O_RDWR | Linux.O_CLOEXEC, 0);
        if (dev < 0) {
            return null;
        }
        String options = "fd=" + dev + ",rootmode=40000,user_id=0,group_id=0,allow_other";
        NativeBuffer source = cString("testfuse");
        NativeBuffer target = cString(at.toString());
        NativeBuffer type = cString("fuse");
        NativeBuffer data = cString(options);
        TestFuse fs = new TestFuse(at, dev, size, lockErrno);
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
            synchronized (this) {
                w.setMemory(0, 16 + 128, (byte) 0);
                int length;
                int error = 0;
                switch (opcode) {
                    case INIT -> {
                        w.putInt(16, 7); // major
                        w.putInt(20, 31); // minor
                        w.putInt(24, r.getInt(arg + 8)); // max_readahead
                        w.putInt(28, lockErrno != 0 ? FUSE_POSIX_LOCKS : FUSE_ASYNC_DIO);
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
                        int count = (int) Math.max(0, Math.min(Math.min(r.getInt(arg + 16), size - offset), MAX_READ));
                        if (holding) {
                            held.add(new long[] {unique, count});
                            notifyAll();
                            continue;
                        }
                        w.setMemory(16, count, fill);
                        length = 16 + count;
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
                        error = lockErrno != 0 ? -lockErrno : -ENOSYS;
                        length = 16;
                    }
                    case FORGET, BATCH_FORGET, INTERRUPT -> {
                        continue; // no reply (an interrupted held read stays held: the server is stuck)
                    }
                    case DESTROY -> length = 16;
                    default -> {
                        error = -ENOSYS;
                        length = 16;
                    }
                }
                reply(unique, error, length);
            }
        }
    }

    /** Writes the reply of {@code length} bytes in {@link #out} (under this). */
    private void reply(long unique, int error, int length) {
        UnsafeBuffer w = out.buffer();
        w.putInt(0, length);
        w.putInt(4, error);
        w.putLong(8, unique);
        Native.libc().write(dev, out.address(), length);
    }

    /** A fuse_attr at {@code at}: the root directory or the one file. */
    private void attr(UnsafeBuffer w, int at, long node) {
        boolean dir = node == ROOT;
        w.putLong(at, node); // ino
        w.putLong(at + 8, dir ? 0 : size); // size
        w.putLong(at + 16, dir ? 0 : size / 512); // blocks
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
    public Path file() {
        return mountPoint.resolve(FILE);
    }

    /** Lock requests the kernel passed on so far. */
    public int lockRequests() {
        return lockRequests;
    }

    /** The byte every read answers with from now on (0 at first). */
    public void fill(byte value) {
        fill = value;
    }

    /** From now on reads are held unanswered (true: a server that stopped answering) or answered. */
    public synchronized void holdReads(boolean value) {
        holding = value;
    }

    /** Waits up to {@code timeoutMs} until at least {@code n} reads are held; returns how many are. */
    public synchronized int awaitHeld(int n, long timeoutMs) throws InterruptedException {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (held.size() < n) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                break;
            }
            wait(Math.max(1, left / 1_000_000L));
        }
        return held.size();
    }

    /** Stops holding reads and answers every held one with {@link #fill} bytes; returns how many. */
    public synchronized int answerHeld() {
        holding = false;
        UnsafeBuffer w = out.buffer();
        int n = held.size();
        for (long[] h : held) {
            int count = (int) h[1];
            w.setMemory(16, count, fill);
            reply(h[0], 0, 16 + count);
        }
        held.clear();
        return n;
    }

    /** Answers what is held (so nothing stays stuck on the mount), unmounts and ends the server. */
    @Override
    public void close() {
        answerHeld();
        closed = true;
        NativeBuffer target = cString(mountPoint.toString());
        Native.syscall(SYS_UMOUNT2, target.address(), MNT_DETACH, 0, 0, 0);
        java.lang.ref.Reference.reachabilityFence(target);
        Native.libc().close(dev); // aborts the connection: the server's read ends, held requests fail
        try {
            server.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
