package io.vblk.sys;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * A Unix stream socket that can pass descriptors (SCM_RIGHTS), as vhost-user needs. Buffers for
 * the message header, iovec and control data are preallocated per socket.
 *
 * <pre>
 * struct msghdr (56 bytes): name @0, namelen u32 @8, iov @16, iovlen u64 @24,
 *                           control @32, controllen u64 @40, flags i32 @48
 * struct cmsghdr:           len u64 @0, level i32 @8, type i32 @12, data @16
 * struct sockaddr_un:       family u16 @0, path[108] @2
 * </pre>
 */
public final class UnixSocket implements AutoCloseable {
    /** Most descriptors one message may carry (vhost-user sends at most 8 regions' fds). */
    public static final int MAX_FDS = 32;

    private static final int SUN_PATH_MAX = 108;
    private static final int SOCKADDR_UN_SIZE = 2 + SUN_PATH_MAX;
    private static final int MSGHDR_SIZE = 56;
    private static final int CMSG_HEADER = 16;
    private static final int CONTROL_SIZE = CMSG_HEADER + 4 * MAX_FDS;

    private final int fd;
    private final UnsafeBuffer msghdr = new NativeBuffer(MSGHDR_SIZE + 16 + CONTROL_SIZE).buffer();
    private volatile boolean closed;

    private UnixSocket(int fd) {
        this.fd = fd;
    }

    /** Wraps a connected socket descriptor. */
    public static UnixSocket wrap(int fd) {
        return new UnixSocket(fd);
    }

    /** Creates a listening socket bound to {@code path} (which must not exist). */
    public static UnixSocket listen(Path path, int backlog) {
        int fd = newSocket();
        try (Sockaddr addr = new Sockaddr(path)) {
            Native.check(Native.libc().bind(fd, addr.address(), SOCKADDR_UN_SIZE), "bind", path);
            Native.check(Native.libc().listen(fd, backlog), "listen", path, backlog);
        } catch (RuntimeException e) {
            Native.libc().close(fd);
            throw e;
        }
        return new UnixSocket(fd);
    }

    /** Connects to the socket at {@code path}. */
    public static UnixSocket connect(Path path) {
        int fd = newSocket();
        try (Sockaddr addr = new Sockaddr(path)) {
            Native.check(Native.libc().connect(fd, addr.address(), SOCKADDR_UN_SIZE), "connect", path);
        } catch (RuntimeException e) {
            Native.libc().close(fd);
            throw e;
        }
        return new UnixSocket(fd);
    }

    /**
     * Whether a process listens on the socket at {@code path}, without ever waiting: a
     * non-blocking connect(2) that is closed at once. A listener whose backlog is full and that
     * accepts nobody (a stopped or stuck process) makes a blocking connect wait for ever; on a
     * Unix socket the non-blocking one answers EAGAIN at once instead, and that, like an
     * accepted connection, means someone listens. Only ECONNREFUSED (a stale socket: its server
     * is gone) or ENOENT (no file) mean nobody does; any other failure (EACCES: a socket of
     * another user) is answered as "listens", so a caller never replaces what it cannot tell is dead.
     */
    public static boolean listening(Path path) {
        int fd = (int) Native.check(Native.libc().socket(Linux.AF_UNIX, Linux.SOCK_STREAM | Linux.SOCK_CLOEXEC
                | Linux.SOCK_NONBLOCK, 0), "socket", "AF_UNIX", "SOCK_STREAM");
        try (Sockaddr addr = new Sockaddr(path)) {
            if (Native.libc().connect(fd, addr.address(), SOCKADDR_UN_SIZE) == 0) {
                return true;
            }
            int errno = Native.errno();
            return errno != ECONNREFUSED && errno != Errno.ENOENT && errno != Errno.ENOTDIR;
        } finally {
            Native.libc().close(fd);
        }
    }

    private static final int ECONNREFUSED = 111;

    private static int newSocket() {
        return (int) Native.check(Native.libc().socket(Linux.AF_UNIX, Linux.SOCK_STREAM | Linux.SOCK_CLOEXEC, 0),
                "socket", "AF_UNIX", "SOCK_STREAM");
    }

    /** Accepts one connection, blocking. */
    public UnixSocket accept() {
        int client = (int) Native.check(Native.libc().accept4(fd, 0, 0, Linux.SOCK_CLOEXEC), "accept4", fd);
        return new UnixSocket(client);
    }

    /**
     * Accepts one connection if one waits, without blocking (the listening socket must be
     * {@link #setNonBlocking() non-blocking}); the new socket is non-blocking too. Returns null
     * when none waits (EAGAIN, or a connection that went away before it was accepted).
     *
     * @throws NativeException for any other failure (EMFILE, a shut-down listener: EINVAL)
     */
    public UnixSocket acceptNonBlocking() {
        int client = Native.libc().accept4(fd, 0, 0, Linux.SOCK_CLOEXEC | Linux.SOCK_NONBLOCK);
        if (client == -1) {
            int errno = Native.errno();
            if (errno == Errno.EAGAIN || errno == Errno.EINTR || errno == ECONNABORTED) {
                return null;
            }
            throw new NativeException(errno, "accept4", fd);
        }
        return new UnixSocket(client);
    }

    private static final int ECONNABORTED = 103;

    /**
     * Makes {@link #send} and {@link #receive} return {@code -EAGAIN} instead of blocking (and
     * {@link #acceptNonBlocking} null), for sockets served from an event loop.
     */
    public void setNonBlocking() {
        int flags = (int) Native.check(Native.libc().fcntl(fd, Linux.F_GETFL, 0), "fcntl(F_GETFL)", fd);
        Native.check(Native.libc().fcntl(fd, Linux.F_SETFL, flags | Linux.O_NONBLOCK), "fcntl(F_SETFL)", fd);
    }

    /**
     * Waits up to {@code timeoutMs} until a {@link #send} can make progress. Returns true when it
     * can (or the socket failed, which the send then reports), false on timeout.
     */
    public boolean awaitWritable(int timeoutMs) {
        NativeBuffer pollfd = new NativeBuffer(8);
        pollfd.buffer().putInt(0, fd);
        pollfd.buffer().putShort(4, Linux.POLLOUT);
        long rc = Native.libc().poll(pollfd.address(), 1, timeoutMs);
        return rc != 0;
    }

    /**
     * Whether the peer has closed or shut down its end (POLLRDHUP or POLLHUP now, without
     * waiting), even with data of it still unread. For the control path: allocates.
     */
    public boolean peerHungUp() {
        NativeBuffer pollfd = new NativeBuffer(8);
        pollfd.buffer().putInt(0, fd);
        pollfd.buffer().putShort(4, Linux.POLLRDHUP);
        long rc = Native.libc().poll(pollfd.address(), 1, 0);
        return rc > 0 && (pollfd.buffer().getShort(6) & (Linux.POLLRDHUP | Linux.POLLHUP)) != 0;
    }

    /** The descriptor. */
    public int fd() {
        return fd;
    }

    /**
     * The peer's credentials (SO_PEERCRED) as {@code {pid, uid, gid}}.
     */
    public int[] peerCredentials() {
        NativeBuffer cred = new NativeBuffer(16);
        NativeBuffer len = new NativeBuffer(8);
        len.buffer().putInt(0, 12);
        Native.check(Native.libc().getsockopt(fd, Linux.SOL_SOCKET, Linux.SO_PEERCRED, cred.address(), len.address()),
                "getsockopt", fd, "SO_PEERCRED");
        return new int[] {cred.buffer().getInt(0), cred.buffer().getInt(4), cred.buffer().getInt(8)};
    }

    /**
     * Sends {@code length} bytes at native {@code address} with {@code fdCount} descriptors from
     * {@code fds}. Returns bytes sent or {@code -errno}.
     */
    public synchronized long send(long address, int length, int[] fds, int fdCount) {
        return send(address, length, fds, fdCount, Linux.MSG_NOSIGNAL);
    }

    /**
     * Sends like {@link #send(long, int, int[], int)} but never blocks, even on a blocking socket:
     * {@code -EAGAIN} when there is no room. For sockets a peer handed over and shares (its
     * file description's blocking mode is the peer's, and so is what else writes into it).
     */
    public long sendNonBlocking(long address, int length) {
        return send(address, length, null, 0, Linux.MSG_NOSIGNAL | Linux.MSG_DONTWAIT);
    }

    private synchronized long send(long address, int length, int[] fds, int fdCount, int flags) {
        if (fdCount < 0 || fdCount > MAX_FDS || (fdCount > 0 && fds.length < fdCount)) {
            throw new IllegalArgumentException("bad descriptor count " + fdCount);
        }
        int control = prepareHeader(address, length);
        if (fdCount > 0) {
            int cmsgLen = CMSG_HEADER + 4 * fdCount;
            msghdr.putLong(control, cmsgLen);
            msghdr.putInt(control + 8, Linux.SOL_SOCKET);
            msghdr.putInt(control + 12, Linux.SCM_RIGHTS);
            for (int i = 0; i < fdCount; i++) {
                msghdr.putInt(control + CMSG_HEADER + 4 * i, fds[i]);
            }
            msghdr.putLong(32, msghdr.addressOffset() + control);
            msghdr.putLong(40, align8(cmsgLen));
        }
        return Native.result(Native.libc().sendmsg(fd, msghdr.addressOffset(), flags));
    }

    /**
     * Receives up to {@code length} bytes into native {@code address}; received descriptors go
     * into {@code fdsOut} (sized {@link #MAX_FDS}) and their count into {@code fdCountOut[0]}.
     * Returns bytes received (0 at end of stream) or {@code -errno}. A message whose descriptors
     * did not fit (MSG_CTRUNC) has the ones that arrived closed and returns {@code -EMSGSIZE}.
     */
    public synchronized long receive(long address, int length, int[] fdsOut, int[] fdCountOut) {
        int control = prepareHeader(address, length);
        msghdr.putLong(32, msghdr.addressOffset() + control);
        msghdr.putLong(40, CONTROL_SIZE);
        fdCountOut[0] = 0;
        long rc = Native.result(Native.libc().recvmsg(fd, msghdr.addressOffset(), Linux.MSG_CMSG_CLOEXEC));
        if (rc < 0) {
            return rc;
        }
        int count = collectFds(control, fdsOut);
        fdCountOut[0] = count;
        if ((msghdr.getInt(48) & Linux.MSG_CTRUNC) != 0) {
            for (int i = 0; i < count; i++) {
                Native.libc().close(fdsOut[i]);
            }
            fdCountOut[0] = 0;
            return -EMSGSIZE;
        }
        return rc;
    }

    /**
     * Clears the msghdr and points it at one iovec of {@code length} bytes at {@code address};
     * returns the offset of the control-data area that follows the iovec.
     */
    private int prepareHeader(long address, int length) {
        int iov = MSGHDR_SIZE;
        msghdr.setMemory(0, msghdr.capacity(), (byte) 0);
        msghdr.putLong(iov, address);
        msghdr.putLong(iov + 8, length);
        msghdr.putLong(16, msghdr.addressOffset() + iov);
        msghdr.putLong(24, 1);
        return MSGHDR_SIZE + 16;
    }

    /** errno for a message whose descriptors were truncated. */
    public static final int EMSGSIZE = 90;

    private int collectFds(int control, int[] fdsOut) {
        long controlLength = msghdr.getLong(40);
        int count = 0;
        int offset = 0;
        while (offset + CMSG_HEADER <= controlLength) {
            long cmsgLen = msghdr.getLong(control + offset);
            if (cmsgLen < CMSG_HEADER || offset + cmsgLen > controlLength) {
                break;
            }
            if (msghdr.getInt(control + offset + 8) == Linux.SOL_SOCKET
                    && msghdr.getInt(control + offset + 12) == Linux.SCM_RIGHTS) {
                int n = (int) ((cmsgLen - CMSG_HEADER) / 4);
                for (int i = 0; i < n; i++) {
                    int received = msghdr.getInt(control + offset + CMSG_HEADER + 4 * i);
                    if (count < fdsOut.length) {
                        fdsOut[count++] = received;
                    } else {
                        Native.libc().close(received);
                    }
                }
            }
            offset += align8((int) cmsgLen);
        }
        return count;
    }

    private static int align8(int value) {
        return (value + 7) & ~7;
    }

    /** Shuts both directions down, waking a thread blocked in receive. */
    public void shutdown() {
        Native.libc().shutdown(fd, Linux.SHUT_RDWR);
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return closed;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            Native.libc().close(fd);
        }
    }

    /** A sockaddr_un in native memory. */
    private static final class Sockaddr implements AutoCloseable {
        private final NativeBuffer memory = new NativeBuffer(SOCKADDR_UN_SIZE + 8);

        Sockaddr(Path path) {
            byte[] bytes = path.toString().getBytes(StandardCharsets.UTF_8);
            if (bytes.length >= SUN_PATH_MAX) {
                throw new IllegalArgumentException("socket path longer than " + (SUN_PATH_MAX - 1) + " bytes: " + path);
            }
            memory.buffer().putShort(0, (short) Linux.AF_UNIX);
            memory.buffer().putBytes(2, bytes);
        }

        long address() {
            return memory.address();
        }

        @Override
        public void close() {
            // memory is freed with the object
        }
    }
}
