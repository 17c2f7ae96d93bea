package io.vblk.sys;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * An epoll(7) instance with a preallocated event array, so {@link #await(int)} allocates nothing.
 *
 * <pre>
 * struct epoll_event (x86-64, packed): u32 events @0, u64 data @4; 12 bytes
 * </pre>
 */
public final class Epoll implements AutoCloseable {
    private static final int EVENT_SIZE = 12;
    private static final int EVENTS_OFFSET = 0;
    private static final int DATA_OFFSET = 4;

    private final int fd;
    private final int maxEvents;
    private final UnsafeBuffer events;
    private final UnsafeBuffer ctl = new NativeBuffer(EVENT_SIZE, 16).buffer();

    /** Creates an epoll instance that returns at most {@code maxEvents} per wait. */
    public Epoll(int maxEvents) {
        if (maxEvents <= 0) {
            throw new IllegalArgumentException("maxEvents must be positive: " + maxEvents);
        }
        this.maxEvents = maxEvents;
        this.events = new NativeBuffer(maxEvents * EVENT_SIZE).buffer();
        this.fd = (int) Native.check(Native.libc().epoll_create1(Linux.EPOLL_CLOEXEC), "epoll_create1");
    }

    /** Watches {@code target} for {@code eventMask}, reporting {@code data} with its events. */
    public void add(int target, int eventMask, long data) {
        control(Linux.EPOLL_CTL_ADD, target, eventMask, data);
    }

    /**
     * Watches {@code target} like {@link #add}, or updates its registration if the kernel still
     * holds one for the same descriptor number and open file. That happens when a descriptor was
     * closed without {@link #remove} while another process still held its file (a frontend's
     * eventfd), and the same file came back under the same number: epoll keeps a registration
     * until the file itself is released, so a plain add fails with EEXIST.
     */
    public void watch(int target, int eventMask, long data) {
        ctl.putInt(EVENTS_OFFSET, eventMask);
        ctl.putLong(DATA_OFFSET, data);
        if (Native.libc().epoll_ctl(fd, Linux.EPOLL_CTL_ADD, target, ctl.addressOffset()) == -1) {
            int errno = Native.errno();
            if (errno != Errno.EEXIST) {
                throw new NativeException(errno, "epoll_ctl", fd, Linux.EPOLL_CTL_ADD, target);
            }
            modify(target, eventMask, data);
        }
    }

    /** Changes what {@code target} is watched for. */
    public void modify(int target, int eventMask, long data) {
        control(Linux.EPOLL_CTL_MOD, target, eventMask, data);
    }

    /** Stops watching {@code target}; a descriptor no longer registered is not an error. */
    public void remove(int target) {
        int rc = Native.libc().epoll_ctl(fd, Linux.EPOLL_CTL_DEL, target, ctl.addressOffset());
        if (rc == -1) {
            int errno = Native.errno();
            if (errno != Errno.ENOENT && errno != Errno.EBADF) {
                throw new NativeException(errno, "epoll_ctl(DEL)", fd, target);
            }
        }
    }

    private void control(int op, int target, int eventMask, long data) {
        ctl.putInt(EVENTS_OFFSET, eventMask);
        ctl.putLong(DATA_OFFSET, data);
        Native.check(Native.libc().epoll_ctl(fd, op, target, ctl.addressOffset()), "epoll_ctl", fd, op, target);
    }

    /**
     * Waits up to {@code timeoutMs} (-1 forever, 0 poll). Returns the number of ready entries
     * (read them with {@link #events(int)} and {@link #data(int)}), or {@code -errno}; EINTR
     * comes back as 0.
     */
    public int await(int timeoutMs) {
        int rc = Native.libc().epoll_wait(fd, events.addressOffset(), maxEvents, timeoutMs);
        if (rc == -1) {
            int errno = Native.errno();
            return errno == Errno.EINTR ? 0 : -errno;
        }
        return rc;
    }

    /** The event mask of ready entry {@code i}. */
    public int events(int i) {
        return events.getInt(i * EVENT_SIZE + EVENTS_OFFSET);
    }

    /** The data word of ready entry {@code i}. */
    public long data(int i) {
        return events.getLong(i * EVENT_SIZE + DATA_OFFSET);
    }

    /** The epoll descriptor. */
    public int fd() {
        return fd;
    }

    @Override
    public void close() {
        Native.libc().close(fd);
    }
}
