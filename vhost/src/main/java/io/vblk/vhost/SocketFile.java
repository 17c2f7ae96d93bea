package io.vblk.vhost;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.GroupPrincipal;
import java.nio.file.attribute.PosixFileAttributeView;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.FileSize;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;

/**
 * The listening socket's file: created with mode 0600 (or the mode and group a deployment asks
 * for) before anyone can connect, a stale socket left by a dead server replaced, anything else at
 * the path left alone, and removed at exit only if it is still the one this server created.
 *
 * <p>{@link UnixSocket#listen} binds and listens in one call; here the mode and group are set
 * between bind and listen, so no connection can be queued while the file still has the umask's
 * mode or the server's group. Connecting needs write permission on the file (unix(7)).
 *
 * <pre>
 * struct sockaddr_un (110 bytes): sun_family u16 @0, sun_path[108] @2 (NUL-terminated)
 * </pre>
 */
public final class SocketFile {
    private static final int FAMILY_OFFSET = 0;
    private static final int PATH_OFFSET = 2;
    private static final int PATH_MAX = 108;
    private static final int SOCKADDR_LENGTH = PATH_OFFSET + PATH_MAX;
    private static final int S_IFMT = 0170000;
    private static final int S_IFSOCK = 0140000;
    /** Owner read and write only: the frontend normally runs as the same user as the server. */
    public static final int DEFAULT_MODE = 0600;

    private final Path path;
    private final Object fileKey;
    private final UnixSocket socket;

    private SocketFile(Path path, Object fileKey, UnixSocket socket) {
        this.path = path;
        this.fileKey = fileKey;
        this.socket = socket;
    }

    /**
     * Checks that {@code path} can become a socket: its directory exists, the name fits a
     * sockaddr_un, and nothing but a socket is there.
     *
     * @throws IllegalArgumentException with a one-line reason otherwise
     */
    public static void check(Path path) {
        Path dir = path.toAbsolutePath().getParent();
        if (dir == null || !Files.isDirectory(dir)) {
            throw new IllegalArgumentException("socket directory does not exist: " + dir);
        }
        if (path.toString().getBytes(StandardCharsets.UTF_8).length >= PATH_MAX) {
            throw new IllegalArgumentException("socket path longer than " + (PATH_MAX - 1) + " bytes: " + path);
        }
        if (Files.exists(path, LinkOption.NOFOLLOW_LINKS) && !isSocket(path)) {
            throw new IllegalArgumentException("refusing to replace " + path + ": it exists and is not a socket");
        }
    }

    /** Whether {@code path} is a socket (not following links). */
    public static boolean isSocket(Path path) {
        try {
            int mode = (Integer) Files.getAttribute(path, "unix:mode", LinkOption.NOFOLLOW_LINKS);
            return (mode & S_IFMT) == S_IFSOCK;
        } catch (IOException | UnsupportedOperationException e) {
            return false;
        }
    }

    /**
     * Resolves a group given by name or number (a name that is all digits and names no group is
     * taken as a gid).
     *
     * @throws IllegalArgumentException when there is no such group
     */
    public static GroupPrincipal group(String nameOrGid) {
        try {
            return FileSystems.getDefault().getUserPrincipalLookupService().lookupPrincipalByGroupName(nameOrGid);
        } catch (IOException e) {
            throw new IllegalArgumentException("socket group not found: '" + nameOrGid + "'");
        }
    }

    /** The permission set of the low nine bits of {@code mode}. */
    static Set<PosixFilePermission> permissions(int mode) {
        Set<PosixFilePermission> set = EnumSet.noneOf(PosixFilePermission.class);
        PosixFilePermission[] bits = PosixFilePermission.values(); // OWNER_READ (0400) ... OTHERS_EXECUTE (0001)
        for (int i = 0; i < bits.length; i++) {
            if ((mode & (0400 >> i)) != 0) {
                set.add(bits[i]);
            }
        }
        return set;
    }

    /**
     * Creates the listening socket at {@code path} with permission bits {@code mode} and, unless
     * null, group {@code group}, replacing a stale socket (never a live one: {@link #refuseLive}).
     *
     * @throws IllegalArgumentException when the path is unusable (see {@link #check}) or a process listens on it
     * @throws UncheckedIOException when the file cannot be replaced, its mode or group cannot be
     *         set, or socket, bind or listen fail
     */
    public static SocketFile listen(Path path, int backlog, int mode, GroupPrincipal group) {
        check(path);
        try {
            if (isSocket(path)) {
                refuseLive(path); // only a stale socket is replaced: a live one is another server's
                Files.delete(path);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot remove the stale socket " + path, e);
        }
        int fd = Native.libc().socket(Linux.AF_UNIX, Linux.SOCK_STREAM | Linux.SOCK_CLOEXEC, 0);
        if (fd < 0) {
            throw new UncheckedIOException(new IOException("cannot create a socket: errno " + Native.errno()));
        }
        boolean bound = false;
        try {
            UnsafeBuffer addr = new NativeBuffer(SOCKADDR_LENGTH + 8).buffer();
            addr.putShort(FAMILY_OFFSET, (short) Linux.AF_UNIX);
            addr.putBytes(PATH_OFFSET, path.toString().getBytes(StandardCharsets.UTF_8));
            Native.check(Native.libc().bind(fd, addr.addressOffset(), SOCKADDR_LENGTH), "bind", path);
            bound = true;
            // bind created the file with the umask's mode; nobody can connect before listen.
            Runnable hook = afterBind;
            if (hook != null) {
                hook.run();
            }
            chmodNoFollow(path, mode);
            if (group != null) {
                Files.getFileAttributeView(path, PosixFileAttributeView.class, LinkOption.NOFOLLOW_LINKS).setGroup(group);
            }
            Object key = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS).fileKey();
            Native.check(Native.libc().listen(fd, backlog), "listen", path, backlog);
            return new SocketFile(path, key, UnixSocket.wrap(fd));
        } catch (IOException e) {
            abandon(fd, bound ? path : null);
            throw new UncheckedIOException("cannot set up socket " + path, e);
        } catch (NativeException e) {
            abandon(fd, bound ? path : null);
            throw new UncheckedIOException(new IOException(e.getMessage(), e));
        }
    }

    /** Test seam: runs between bind and the mode change (null in production). */
    static volatile Runnable afterBind;

    /**
     * Sets the permission bits of the socket file at {@code path} without following a symbolic
     * link: chmod(2) follows one, so a writer of the directory that swapped the new socket for a
     * link between bind and chmod would have had the mode (0660, 0666) put on the link's target,
     * any file of ours. The name is opened with O_PATH|O_NOFOLLOW (a link is opened as itself),
     * its kind checked with fstat(2), and only a socket is changed, through
     * {@code /proc/self/fd/N} (that very inode). The group is set with lchown (NOFOLLOW) already.
     */
    static void chmodNoFollow(Path path, int mode) throws IOException {
        int flags = Linux.O_PATH | Linux.O_NOFOLLOW | Linux.O_CLOEXEC;
        int fd = Native.libc().open(path.toString(), flags, 0);
        if (fd == -1) {
            throw new IOException("cannot open " + path + " to set its mode: " + Errno.describe(Native.errno()));
        }
        try {
            int st = FileSize.mode(fd);
            if (st < 0) {
                throw new IOException("cannot fstat " + path + ": " + Errno.describe(-st));
            }
            if ((st & S_IFMT) != S_IFSOCK) {
                throw new IOException(path + " is no longer the socket just bound (replaced by a symbolic link or"
                        + " another file): its mode is left alone");
            }
            Files.setPosixFilePermissions(Path.of("/proc/self/fd/" + fd), permissions(mode));
        } finally {
            Native.libc().close(fd);
        }
    }

    /**
     * Refuses {@code path} when a process listens on it ({@link UnixSocket#listening}: a bounded
     * probe that never waits for a listener that accepts nobody). Deleting a live socket file
     * would take it over: its server keeps running but nobody can reach it again.
     *
     * @throws IllegalArgumentException "another process listens on PATH"
     */
    public static void refuseLive(Path path) {
        if (isSocket(path) && UnixSocket.listening(path)) {
            throw new IllegalArgumentException("another process listens on " + path);
        }
    }

    /** Undoes a failed set-up: the descriptor, and the file bind created (null: none). */
    private static void abandon(int fd, Path created) {
        Native.libc().close(fd);
        if (created != null) {
            try {
                Files.deleteIfExists(created);
            } catch (IOException e) {
                // Nothing more to undo.
            }
        }
    }

    public Path path() {
        return path;
    }

    public UnixSocket socket() {
        return socket;
    }

    /** Closes the socket and removes its file, unless another process has put its own there since. */
    public void closeAndRemove() {
        socket.close();
        try {
            BasicFileAttributes now = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
            if (fileKey != null && fileKey.equals(now.fileKey())) {
                Files.delete(path);
            }
        } catch (IOException e) {
            // Already gone, or not ours to remove.
        }
    }
}
