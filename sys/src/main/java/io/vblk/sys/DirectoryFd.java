package io.vblk.sys;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * A directory opened once, and the calls that name files relative to it (openat, renameat,
 * unlinkat, and fstat of what was opened), so that what a caller checks and what it then writes
 * or renames are in one directory whatever happens to the directory's path meanwhile (a
 * directory renamed away and a symbolic link put in its place). Names are single components:
 * no '/'. Control-plane use only (each call allocates its buffers).
 */
public final class DirectoryFd implements AutoCloseable {
    static final long SYS_OPENAT = 257;
    static final long SYS_UNLINKAT = 263;
    static final long SYS_RENAMEAT = 264;
    static final long SYS_RENAMEAT2 = 316;
    /** renameat2: fail with EEXIST rather than replace an existing name. */
    public static final int RENAME_NOREPLACE = 1;
    /** renameat2: swap the two names atomically (both must exist). */
    public static final int RENAME_EXCHANGE = 2;
    static final long SYS_FSYNC = 74;
    static final long SYS_WRITE = 1;
    static final long SYS_PREAD = 17;
    static final long SYS_CLOSE = 3;

    /** {@code struct stat} on x86-64 (144 bytes). */
    private static final int STAT_LENGTH = 144;

    private final Path path;
    private final int fd;
    private boolean closed;

    private DirectoryFd(Path path, int fd) {
        this.path = path;
        this.fd = fd;
    }

    /**
     * What fstat(2) says of a file: its identity (device and inode), type and permission bits,
     * and what changes when it is written (size, modification time to the nanosecond).
     */
    public record Stat(long dev, long ino, int mode, long rdev, long size, long mtimeSec, long mtimeNsec) {
        public boolean isRegularFile() {
            return (mode & 0170000) == 0100000;
        }

        /** Whether {@code o} is the same file with the same size and modification time. */
        public boolean sameVersion(Stat o) {
            return o != null && dev == o.dev && ino == o.ino && size == o.size && mtimeSec == o.mtimeSec && mtimeNsec == o.mtimeNsec;
        }
    }

    /**
     * Opens the directory {@code dir} (symbolic links in its path are followed once, here).
     *
     * @throws NativeException with errno (ENOENT, ENOTDIR, EACCES) when it cannot be opened
     */
    public static DirectoryFd open(Path dir) {
        int flags = Linux.O_RDONLY | Linux.O_DIRECTORY | Linux.O_CLOEXEC;
        int fd = Native.libc().open(dir.toString(), flags, 0);
        if (fd == -1) {
            throw new NativeException(Native.errno(), "open", dir, "O_DIRECTORY");
        }
        return new DirectoryFd(dir, fd);
    }

    /** The path the directory was opened by (for messages: it may name another directory by now). */
    public Path path() {
        return path;
    }

    /**
     * openat(2) of {@code name} in this directory with {@code flags} (O_CLOEXEC and O_NOFOLLOW
     * are always added: a symbolic link is refused with ELOOP, never followed) and {@code mode};
     * the descriptor, or {@code -errno}.
     */
    public int openAt(String name, int flags, int mode) {
        NativeBuffer cName = cString(name);
        long rc = Native.syscall(SYS_OPENAT, fd, cName.address(), flags | Linux.O_CLOEXEC | Linux.O_NOFOLLOW, mode, 0);
        java.lang.ref.Reference.reachabilityFence(cName);
        return (int) rc;
    }

    /**
     * fstat of {@code name} as opened in this directory (O_PATH | O_NOFOLLOW: nothing is opened
     * for I/O, a FIFO never waits, a symbolic link is the link itself); null when there is none.
     *
     * @throws NativeException for any other failure
     */
    public Stat stat(String name) {
        int f = openAt(name, Linux.O_PATH, 0);
        if (f == -Errno.ENOENT) {
            return null;
        }
        if (f < 0) {
            throw new NativeException(-f, "openat", path, name);
        }
        try {
            return fstat(f);
        } finally {
            Native.syscall(SYS_CLOSE, f, 0, 0, 0, 0);
        }
    }

    /**
     * fstat(2) of the descriptor {@code fd}.
     *
     * @throws NativeException when it fails
     */
    public static Stat fstat(int fd) {
        UnsafeBuffer b = new NativeBuffer(STAT_LENGTH, 8).buffer();
        long rc = Native.syscall(Linux.SYS_FSTAT, fd, b.addressOffset(), 0, 0, 0);
        if (rc < 0) {
            throw new NativeException((int) -rc, "fstat", fd);
        }
        return new Stat(b.getLong(0), b.getLong(8), b.getInt(24), b.getLong(40), b.getLong(48), b.getLong(88), b.getLong(96));
    }

    /** unlinkat(2) of {@code name}: true when removed, false when there was none; throws otherwise (EISDIR, EACCES). */
    public boolean unlink(String name) {
        NativeBuffer cName = cString(name);
        long rc = Native.syscall(SYS_UNLINKAT, fd, cName.address(), 0, 0, 0);
        java.lang.ref.Reference.reachabilityFence(cName);
        if (rc == -Errno.ENOENT) {
            return false;
        }
        if (rc < 0) {
            throw new NativeException((int) -rc, "unlinkat", path, name);
        }
        return true;
    }

    /** renameat(2) of {@code from} to {@code to}, both in this directory (atomic: {@code to} names the old file or the new one). */
    public void rename(String from, String to) {
        NativeBuffer a = cString(from);
        NativeBuffer b = cString(to);
        long rc = Native.syscall(SYS_RENAMEAT, fd, a.address(), fd, b.address(), 0);
        java.lang.ref.Reference.reachabilityFence(a);
        java.lang.ref.Reference.reachabilityFence(b);
        if (rc < 0) {
            throw new NativeException((int) -rc, "renameat", path, from, to);
        }
    }

    /**
     * renameat2(2) of {@code from} to {@code to} in this directory with {@code flags}
     * ({@link #RENAME_NOREPLACE}, {@link #RENAME_EXCHANGE}); 0 or {@code -errno} (EINVAL where
     * the filesystem does not do the flag, ENOSYS before Linux 3.15, EEXIST for NOREPLACE).
     */
    public int rename2(String from, String to, int flags) {
        NativeBuffer a = cString(from);
        NativeBuffer b = cString(to);
        long rc = Native.syscall(SYS_RENAMEAT2, fd, a.address(), fd, b.address(), flags);
        java.lang.ref.Reference.reachabilityFence(a);
        java.lang.ref.Reference.reachabilityFence(b);
        return (int) rc;
    }

    /** fsync(2) of the directory: a rename or an unlink in it durable. */
    public void fsync() {
        sync(fd, path);
    }

    /** fsync(2) of {@code fd}. */
    public static void sync(int fd, Object what) {
        long rc = Native.syscall(SYS_FSYNC, fd, 0, 0, 0, 0);
        if (rc < 0) {
            throw new NativeException((int) -rc, "fsync", what);
        }
    }

    /** Writes all of {@code bytes} at the descriptor's offset (a short write goes on). */
    public static void writeAll(int fd, byte[] bytes, Object what) {
        if (bytes.length == 0) {
            return;
        }
        NativeBuffer b = new NativeBuffer(bytes.length, 8);
        b.buffer().putBytes(0, bytes);
        long done = 0;
        while (done < bytes.length) {
            long rc = Native.syscall(SYS_WRITE, fd, b.address() + done, bytes.length - done, 0, 0);
            if (rc == -Errno.EINTR) {
                continue;
            }
            if (rc < 0) {
                throw new NativeException((int) -rc, "write", what);
            }
            done += rc;
        }
        java.lang.ref.Reference.reachabilityFence(b);
    }

    /** Reads up to {@code max} bytes of {@code fd} from offset 0 (fewer at its end). */
    public static byte[] readUpTo(int fd, int max, Object what) {
        NativeBuffer b = new NativeBuffer(Math.max(max, 1), 8);
        long done = 0;
        while (done < max) {
            long rc = Native.syscall(SYS_PREAD, fd, b.address() + done, max - done, done, 0);
            if (rc == -Errno.EINTR) {
                continue;
            }
            if (rc < 0) {
                throw new NativeException((int) -rc, "pread", what);
            }
            if (rc == 0) {
                break;
            }
            done += rc;
        }
        byte[] out = new byte[(int) done];
        b.buffer().getBytes(0, out);
        java.lang.ref.Reference.reachabilityFence(b);
        return out;
    }

    /** close(2) of a descriptor this class handed out. */
    public static void closeFd(int fd) {
        Native.syscall(SYS_CLOSE, fd, 0, 0, 0, 0);
    }

    private static NativeBuffer cString(String name) {
        if (name.isEmpty() || name.indexOf('/') >= 0 || name.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("not a file name in a directory: '" + name + "'");
        }
        byte[] bytes = name.getBytes(StandardCharsets.UTF_8);
        NativeBuffer b = new NativeBuffer(bytes.length + 1);
        b.buffer().putBytes(0, bytes);
        b.buffer().putByte(bytes.length, (byte) 0);
        return b;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            Native.syscall(SYS_CLOSE, fd, 0, 0, 0, 0);
        }
    }
}
