package io.vblk.sys;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * An eventfd(2): the kick and interrupt signal of a virtqueue. {@link #signal()} and
 * {@link #read()} are hot-path calls: one syscall each, no allocation, errors as return codes.
 *
 * <p>An eventfd received from another process (a vhost-user frontend) shares its open file
 * description: {@link #wrap(int)} never changes its flags, so blocking-ness is the sender's
 * choice. Use {@link #await(int)} (poll) to wait with a timeout instead.
 */
public final class EventFd implements AutoCloseable {
    private final int fd;
    private final boolean owned;
    /** True for a descriptor from elsewhere, whose blocking-ness is not ours: signalled through io_uring. */
    private final boolean foreign;
    private UringSignal uring;
    private final NativeBuffer scratch = new NativeBuffer(16, 16);
    private final UnsafeBuffer pollfd = new NativeBuffer(8, 8).buffer();
    private volatile boolean closed;

    private EventFd(int fd, boolean owned, boolean foreign) {
        this.fd = fd;
        this.owned = owned;
        this.foreign = foreign;
    }

    /** Creates a close-on-exec eventfd, non-blocking if asked. */
    public static EventFd create(boolean nonBlocking) {
        int flags = Linux.EFD_CLOEXEC | (nonBlocking ? Linux.EFD_NONBLOCK : 0);
        int fd = (int) Native.check(Native.libc().eventfd(0, flags), "eventfd", 0, flags);
        return new EventFd(fd, true, false);
    }

    /**
     * Wraps a descriptor received from elsewhere; {@link #close()} closes it. Its
     * {@link #signal()} never blocks, whatever the descriptor is and whatever its flags (see
     * {@link UringSignal}).
     */
    public static EventFd wrap(int fd) {
        if (fd < 0) {
            throw new IllegalArgumentException("bad eventfd descriptor: " + fd);
        }
        return new EventFd(fd, true, true);
    }

    /**
     * A second descriptor for the same eventfd (fcntl F_DUPFD_CLOEXEC), owned and closed by the
     * copy, signalled the same way as this one. Whoever keeps a copy may write to it for as long
     * as it likes, whatever the owner of this one does with its own: closing this descriptor
     * never hands the copy's number to another file. Used by the engine for every kick and
     * interrupt an embedder hands to a device.
     *
     * @throws IllegalStateException when this descriptor is closed
     * @throws NativeException when no descriptor is left (EMFILE)
     */
    public EventFd duplicate() {
        if (closed) {
            throw new IllegalStateException(this + " is closed: nothing to duplicate");
        }
        int copy = Native.libc().fcntl(fd, Linux.F_DUPFD_CLOEXEC, 0);
        if (copy < 0) {
            throw new NativeException(Native.errno(), "fcntl", fd, "F_DUPFD_CLOEXEC");
        }
        return new EventFd(copy, true, foreign);
    }

    /** The descriptor. */
    public int fd() {
        return fd;
    }

    /**
     * Adds one to the counter, waking a reader. Returns 0 or {@code -errno}; EAGAIN (counter
     * saturated) still means a reader will wake, so callers may ignore it. Never blocks on a
     * {@link #wrap wrapped} descriptor: the write goes through a private io_uring, so a full
     * counter or a blocking pipe parks a kernel worker, not this thread. One signalling thread
     * at a time. After {@link #close()} it writes nothing and answers EBADF; a close racing a
     * signal on another thread is the caller's to prevent (a device signals its own
     * {@link #duplicate() copy}, never the embedder's descriptor).
     */
    public int signal() {
        if (closed) {
            // Never write a number this object no longer owns: another file may have it now.
            return -Errno.EBADF;
        }
        if (foreign) {
            return signalForeign();
        }
        scratch.buffer().putLong(0, 1L);
        long rc = Native.libc().write(fd, scratch.address(), 8);
        return rc == 8 ? 0 : (int) Native.result(rc);
    }

    private int signalForeign() {
        if (closed) {
            return -Errno.EBADF;
        }
        if (uring == null) {
            try {
                uring = new UringSignal(fd);
            } catch (NativeException e) {
                // No io_uring here (disabled by sysctl, or seccomp): the best left is a
                // readiness check, which a frontend filling the counter concurrently can beat.
                return signalIfWritable();
            }
        }
        return uring.signal();
    }

    private int signalIfWritable() {
        pollfd.putInt(0, fd);
        pollfd.putShort(4, Linux.POLLOUT);
        pollfd.putShort(6, (short) 0);
        long rc = Native.libc().poll(pollfd.addressOffset(), 1, 0);
        if (rc <= 0 || (pollfd.getShort(6) & Linux.POLLOUT) == 0) {
            return -Errno.EAGAIN;
        }
        scratch.buffer().putLong(0, 1L);
        rc = Native.libc().write(fd, scratch.address(), 8);
        return rc == 8 ? 0 : (int) Native.result(rc);
    }

    /** Whether a signal of this wrapped descriptor is still parked in the kernel (tests). */
    public boolean signalPending() {
        return uring != null && uring.pending();
    }

    /**
     * Reads and resets the counter. Returns the count, or {@code -errno} (EAGAIN when a
     * non-blocking eventfd is zero). Blocks on a blocking eventfd whose counter is zero.
     * {@code -EBADF} after {@link #close()}, without a syscall: the number may name another
     * file by now, whose counter (or a socket's bytes) a read would consume. This guards a read
     * after a close on the same thread (or one ordered after the close) only: the check and the
     * syscall are not atomic, so a {@link #close()} on another thread between them lets the read
     * reach the number after it was closed, and so possibly another file that reused it. Callers
     * that close from another thread must keep readers out first, as for {@link #signal()}.
     */
    public long read() {
        if (closed) {
            return -Errno.EBADF;
        }
        long rc = Native.libc().read(fd, scratch.address() + 8, 8);
        return rc == 8 ? scratch.buffer().getLong(8) : Native.result(rc);
    }

    /**
     * Waits up to {@code timeoutMs} (-1: forever) until the counter is non-zero, without
     * consuming it. Returns 1 when readable, 0 on timeout, {@code -errno} on error
     * ({@code -EBADF} after {@link #close()}: never another file's readiness). As {@link
     * #read()}, only for a close on the same thread or ordered before the call: a close on another
     * thread between the check and the poll can reach a number another file reused (or leave the
     * poll waiting on it), so such callers keep waiters out (or wake them) before closing.
     */
    public int await(int timeoutMs) {
        if (closed) {
            return -Errno.EBADF;
        }
        pollfd.putInt(0, fd);
        pollfd.putShort(4, Linux.POLLIN);
        pollfd.putShort(6, (short) 0);
        long rc = Native.libc().poll(pollfd.addressOffset(), 1, timeoutMs);
        if (rc < 0) {
            return (int) Native.result(rc);
        }
        if (rc > 0 && (pollfd.getShort(6) & (Linux.POLLERR | Linux.POLLNVAL)) != 0) {
            return -Errno.EBADF;
        }
        return (int) rc;
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return closed;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            if (uring != null) {
                uring.close();
            }
            if (owned) {
                Native.libc().close(fd);
            }
        }
    }

    @Override
    public String toString() {
        return "EventFd[" + fd + "]";
    }
}
