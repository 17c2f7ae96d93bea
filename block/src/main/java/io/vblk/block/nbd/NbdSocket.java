package io.vblk.block.nbd;

import java.io.IOException;
import java.net.InetAddress;
import java.net.Inet6Address;
import java.net.UnknownHostException;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.LibC;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

import jnr.ffi.LibraryLoader;

/**
 * A non-blocking stream socket to an NBD server (Unix, or TCP over IPv4 or IPv6), with the
 * blocking-with-deadline helpers the handshake needs, and the TLS session once one is started.
 * The transmission phase uses {@link #fd()} directly with sendmsg/read (plain) or through
 * {@link #tls()}.
 *
 * <pre>
 * struct sockaddr_un: family u16 @0, path[108] @2
 * struct sockaddr_in:  family u16 @0, port u16 (big-endian) @2, addr u32 (network order) @4, zero[8]
 * struct sockaddr_in6: family u16 @0, port u16 (big-endian) @2, flowinfo u32 @4, addr[16] @8, scope_id u32 @24
 * struct pollfd:      fd i32 @0, events i16 @4, revents i16 @6
 * </pre>
 */
final class NbdSocket implements AutoCloseable {
    /** The calls libc offers that {@link LibC} does not bind. */
    public interface SocketLib {
        int setsockopt(int fd, int level, int option, long valueAddress, int length);

        long send(int fd, long bufAddress, long length, int flags);

        int shutdown(int fd, int how);
    }

    static final SocketLib LIB;

    static {
        Native.libc(); // loads libc with jnr-ffi's fast stubs disabled first
        LIB = LibraryLoader.create(SocketLib.class).failImmediately().load("c");
    }

    private static final int AF_INET = 2;
    private static final int AF_INET6 = 10;
    private static final int IPPROTO_TCP = 6;
    private static final int TCP_NODELAY = 1;
    private static final int SO_ERROR = 4;
    private static final int EINPROGRESS = 115;
    static final short POLLOUT = 0x004;
    private static final int SUN_PATH_MAX = 108;

    private final int fd;
    private final UnsafeBuffer scratch = new NativeBuffer(128).buffer();
    private boolean closed;
    /**
     * An eventfd that ends every wait of this socket while signalled, or -1: a reconnect's
     * socket carries the closing disk's so that close need not wait out a server that accepts
     * and never greets (up to the connect timeout, which may be an hour).
     */
    private volatile int cancelFd = -1;
    /** The TLS session once NBD_OPT_STARTTLS succeeded, or null (plain). */
    private NbdTlsSession tls;

    private NbdSocket(int fd) {
        this.fd = fd;
    }

    /**
     * Connects to {@code address} by {@code deadlineNs} (the deadline of the connect and the
     * handshake together: {@code timeoutMs} is that limit, named when it runs out). While
     * {@code cancelFd} (an eventfd, or -1 for none) is signalled, every wait of this socket (the
     * connect, the handshake's reads and writes) ends at once with an error: a closing disk so
     * stops a reconnect in progress instead of waiting out the server.
     */
    static NbdSocket connect(NbdAddress address, long deadlineNs, int timeoutMs, int cancelFd) throws IOException {
        return address.socket() != null ? connectUnix(address, deadlineNs, timeoutMs, cancelFd)
                : connectTcp(address, deadlineNs, timeoutMs, cancelFd);
    }

    private static NbdSocket connectUnix(NbdAddress address, long deadlineNs, int timeoutMs, int cancelFd) throws IOException {
        byte[] path = address.socket().toString().getBytes(StandardCharsets.UTF_8);
        if (path.length >= SUN_PATH_MAX) {
            throw new IOException("socket path longer than " + (SUN_PATH_MAX - 1) + " bytes: " + address.socket());
        }
        NbdSocket socket = open(Linux.AF_UNIX, cancelFd);
        socket.scratch.setMemory(0, 112, (byte) 0);
        socket.scratch.putShort(0, (short) Linux.AF_UNIX);
        socket.scratch.putBytes(2, path);
        socket.finishConnect(2 + SUN_PATH_MAX, address, deadlineNs, timeoutMs);
        return socket;
    }

    private static NbdSocket connectTcp(NbdAddress address, long deadlineNs, int timeoutMs, int cancelFd) throws IOException {
        InetAddress[] candidates = resolve(address.host());
        IOException last = null;
        for (InetAddress ip : candidates) {
            try {
                return connectTcp(ip, address, deadlineNs, timeoutMs, cancelFd);
            } catch (IOException e) {
                last = e;
            }
        }
        throw last != null ? last : new IOException("no address for NBD host " + address.host());
    }

    private static NbdSocket connectTcp(InetAddress ip, NbdAddress address, long deadlineNs, int timeoutMs, int cancelFd)
            throws IOException {
        boolean v6 = ip instanceof Inet6Address;
        NbdSocket socket = open(v6 ? AF_INET6 : AF_INET, cancelFd);
        socket.scratch.setMemory(0, 28, (byte) 0);
        socket.scratch.putShort(0, (short) (v6 ? AF_INET6 : AF_INET));
        socket.scratch.putShort(2, (short) address.port(), ByteOrder.BIG_ENDIAN);
        if (v6) {
            socket.scratch.putBytes(8, ip.getAddress());
            socket.scratch.putInt(24, ((Inet6Address) ip).getScopeId());
        } else {
            socket.scratch.putBytes(4, ip.getAddress());
        }
        socket.scratch.putInt(64, 1);
        // Requests and replies are small and latency-bound: never let Nagle hold one back.
        LIB.setsockopt(socket.fd, IPPROTO_TCP, TCP_NODELAY, socket.scratch.addressOffset() + 64, 4);
        socket.finishConnect(v6 ? 28 : 16, address, deadlineNs, timeoutMs);
        return socket;
    }

    /**
     * Resolves {@code host} (a name, an IPv4 or an IPv6 address), IPv4 addresses first. Any host
     * is allowed: with TLS ({@code nbds://}) a remote server is authenticated and the data
     * encrypted; a plain {@code nbd://} to a remote host is allowed too (as QEMU allows it), and
     * {@link #isLoopback} lets the caller warn about it.
     */
    static InetAddress[] resolve(String host) throws IOException {
        String bare = host.startsWith("[") && host.endsWith("]") ? host.substring(1, host.length() - 1) : host;
        try {
            InetAddress[] all = InetAddress.getAllByName(bare);
            java.util.Arrays.sort(all, (a, b) -> Boolean.compare(a instanceof Inet6Address, b instanceof Inet6Address));
            return all;
        } catch (UnknownHostException e) {
            throw new IOException("cannot resolve NBD host " + host, e);
        }
    }

    /** Whether every address of {@code host} is a loopback address (false when it does not resolve). */
    static boolean isLoopback(String host) {
        try {
            for (InetAddress a : resolve(host)) {
                if (!a.isLoopbackAddress()) {
                    return false;
                }
            }
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static NbdSocket open(int family, int cancelFd) throws IOException {
        int fd = Native.libc().socket(family, Linux.SOCK_STREAM | Linux.SOCK_CLOEXEC | Linux.O_NONBLOCK, 0);
        if (fd < 0) {
            throw new IOException("socket: " + Errno.describe(Native.errno()));
        }
        NbdSocket socket;
        try {
            socket = new NbdSocket(fd); // its scratch is direct memory, which may be exhausted
        } catch (OutOfMemoryError e) {
            Native.libc().close(fd); // a reconnect retries every 500 ms: each would leak its socket
            throw e;
        }
        socket.cancelFd = cancelFd;
        return socket;
    }

    private void finishConnect(int sockaddrLength, NbdAddress address, long deadlineNs, int timeoutMs) throws IOException {
        int rc = Native.libc().connect(fd, scratch.addressOffset(), sockaddrLength);
        int errno = rc < 0 ? Native.errno() : 0;
        while (errno == EINPROGRESS || errno == Errno.EAGAIN) {
            int ready = awaitUntil(POLLOUT, deadlineNs);
            if (ready == -Errno.ECANCELED) {
                close();
                throw new IOException("connect to " + address + " given up: the disk is closing");
            }
            if (ready == 0) {
                close();
                throw new IOException("connect to " + address + " timed out (connect timeout " + timeoutMs + " ms)");
            }
            if (ready == -Errno.EINTR) {
                continue; // wait again, within the same deadline
            }
            if (ready < 0) {
                close();
                throw new IOException("connect to " + address + ": poll: " + Errno.describe(-ready));
            }
            scratch.putInt(64, 0);
            scratch.putInt(72, 4);
            Native.libc().getsockopt(fd, Linux.SOL_SOCKET, SO_ERROR, scratch.addressOffset() + 64, scratch.addressOffset() + 72);
            errno = scratch.getInt(64);
            break;
        }
        if (errno != 0) {
            close();
            throw new IOException("connect to " + address + ": " + Errno.describe(errno));
        }
    }

    /** The TLS session over this socket, or null. */
    NbdTlsSession tls() {
        return tls;
    }

    /** Switches the socket to TLS: every byte from now on goes through {@code session}. */
    void startTls(NbdTlsSession session) {
        tls = session;
    }

    /** The descriptor (non-blocking). */
    int fd() {
        return fd;
    }

    /** No longer ends waits early: the handshake is done, the socket belongs to the transmission phase. */
    void stopCancel() {
        cancelFd = -1;
    }

    /**
     * Polls for {@code events}; returns revents, 0 on timeout, -ECANCELED when the cancel eventfd
     * is signalled, or -errno.
     */
    int await(short events, int timeoutMs) {
        scratch.putInt(96, fd);
        scratch.putShort(100, events);
        scratch.putShort(102, (short) 0);
        // The cancel eventfd in the same poll: a closing disk ends the wait without a timeout of
        // its own (the connect timeout may be an hour).
        int cancel = cancelFd;
        scratch.putInt(104, cancel);
        scratch.putShort(108, Linux.POLLIN);
        scratch.putShort(110, (short) 0);
        long rc = Native.libc().poll(scratch.addressOffset() + 96, cancel >= 0 ? 2 : 1, timeoutMs);
        if (rc < 0) {
            return (int) Native.result(rc);
        }
        if (rc > 0 && cancel >= 0 && scratch.getShort(110) != 0) {
            return -Errno.ECANCELED;
        }
        return rc == 0 ? 0 : scratch.getShort(102) & 0xffff;
    }

    /** Writes {@code length} bytes at {@code address}, waiting for room until {@code deadlineNs}. */
    void writeFully(long address, int length, long deadlineNs) throws IOException {
        if (tls != null) {
            tls.writeFully(address, length, deadlineNs);
            return;
        }
        int done = 0;
        while (done < length) {
            long rc = LIB.send(fd, address + done, length - done, Linux.MSG_NOSIGNAL);
            if (rc > 0) {
                done += (int) rc;
                continue;
            }
            int errno = rc < 0 ? Native.errno() : Errno.EPIPE;
            if (errno != Errno.EAGAIN && errno != Errno.EINTR) {
                throw new IOException("send: " + Errno.describe(errno));
            }
            waitFor(POLLOUT, deadlineNs);
        }
    }

    /** Reads exactly {@code length} bytes into {@code address}, waiting until {@code deadlineNs}. */
    void readFully(long address, int length, long deadlineNs) throws IOException {
        if (tls != null) {
            tls.readFully(address, length, deadlineNs);
            return;
        }
        int done = 0;
        while (done < length) {
            long rc = Native.libc().read(fd, address + done, length - done);
            if (rc > 0) {
                done += (int) rc;
                continue;
            }
            if (rc == 0) {
                throw new IOException("server closed the connection during the handshake");
            }
            int errno = Native.errno();
            if (errno != Errno.EAGAIN && errno != Errno.EINTR) {
                throw new IOException("read: " + Errno.describe(errno));
            }
            waitFor(Linux.POLLIN, deadlineNs);
        }
    }

    /** Waits until {@code events} (POLLIN, POLLOUT) or throws once {@code deadlineNs} passed. */
    void waitUntil(short events, long deadlineNs) throws IOException {
        waitFor(events, deadlineNs);
    }

    private void waitFor(short events, long deadlineNs) throws IOException {
        int ready = awaitUntil(events, deadlineNs);
        if (ready == 0) {
            throw new IOException("NBD server did not answer in time");
        }
        if (ready == -Errno.ECANCELED) {
            throw new IOException("NBD handshake given up: the disk is closing");
        }
    }

    /**
     * {@link #await} until {@code deadlineNs}; 0 once it has passed. The wait is rounded up to
     * whole milliseconds, so a wait that ends without the event ends at or after the deadline,
     * never in its last millisecond (callers name the timeout when they see it has passed).
     */
    private int awaitUntil(short events, long deadlineNs) {
        long leftNs = deadlineNs - System.nanoTime();
        if (leftNs <= 0) {
            return 0;
        }
        return await(events, (int) Math.min((leftNs + 999_999) / 1_000_000, Integer.MAX_VALUE));
    }

    /**
     * Ends the stream both ways (shutdown(2), SHUT_RDWR) before a close: any wait on it, here or
     * in another holder of the descriptor, ends at once, and nothing more is read from it.
     */
    void shutdown() {
        if (!closed) {
            LIB.shutdown(fd, 2);
        }
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            Native.libc().close(fd);
        }
    }
}
