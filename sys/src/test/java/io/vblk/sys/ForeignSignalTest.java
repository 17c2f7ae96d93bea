package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Issue 10, bug 2: a frontend's descriptor signalled through {@link EventFd#wrap} never blocks
 * the signalling thread, whatever the frontend passed: a blocking eventfd whose counter is full,
 * a full blocking pipe or socket, a FIFO nobody reads, a regular file. Before the fix the first
 * case hung the I/O thread in write(2) forever. Each case signals many times from another thread
 * and must return; a hang fails the test after a generous bound.
 */
class ForeignSignalTest {
    private static final long SYS_PIPE2 = 293;
    private static final long SYS_SOCKETPAIR = 53;
    private static final int AF_UNIX = 1;
    private static final int SOCK_STREAM = 1;
    private static final int O_RDWR = 2;
    private static final int O_CREAT = 0100;
    private static final int O_NONBLOCK = 04000;
    private static final int F_SETFL = 4;

    @TempDir
    Path dir;

    @Test
    void aFullBlockingEventFdParksAKernelWorkerNotTheCaller() throws Exception {
        try (EventFd frontend = EventFd.create(false)) {
            fill(frontend);
            EventFd wrapped = EventFd.wrap(Native.libc().dup(frontend.fd()));
            signalMany(wrapped);
            assertTrue(wrapped.signalPending(), "the write waits in the kernel for room");
            // Whether the parked write lands once the frontend drains its counter is up to
            // io_uring's retry of a blocking descriptor (not always, seen on 6.18): a frontend
            // that fills its own counter may lose that one signal; the daemon never blocks.
            NativeBuffer b = new NativeBuffer(8, 8);
            assertEquals(8, Native.libc().read(frontend.fd(), b.address(), 8));
            closeWithin(wrapped);
        }
    }

    @Test
    void closingCancelsAParkedWrite() throws Exception {
        try (EventFd frontend = EventFd.create(false)) {
            fill(frontend);
            EventFd wrapped = EventFd.wrap(Native.libc().dup(frontend.fd()));
            signalMany(wrapped);
            closeWithin(wrapped);
        }
    }

    @Test
    void aNonBlockingEventFdIsSignalledInline() throws Exception {
        try (EventFd frontend = EventFd.create(true)) {
            EventFd wrapped = EventFd.wrap(Native.libc().dup(frontend.fd()));
            assertEquals(0, wrapped.signal());
            assertEquals(1L, frontend.read());
            for (int i = 0; i < 100; i++) {
                wrapped.signal();
            }
            assertEquals(1, frontend.await(10_000));
            assertTrue(frontend.read() >= 1);
            closeWithin(wrapped);
        }
    }

    @Test
    void anEmptyBlockingEventFdIsSignalled() throws Exception {
        try (EventFd frontend = EventFd.create(false)) {
            EventFd wrapped = EventFd.wrap(Native.libc().dup(frontend.fd()));
            assertEquals(0, wrapped.signal());
            assertEquals(1, frontend.await(10_000));
            assertEquals(1L, frontend.read());
            closeWithin(wrapped);
        }
    }

    @Test
    void aFullBlockingPipe() throws Exception {
        NativeBuffer fds = new NativeBuffer(8, 8);
        assertEquals(0, Native.syscall(SYS_PIPE2, fds.address(), 0, 0, 0, 0));
        int read = fds.buffer().getInt(0);
        int write = fds.buffer().getInt(4);
        fillStream(write);
        EventFd wrapped = EventFd.wrap(write);
        signalMany(wrapped);
        closeWithin(wrapped);
        Native.libc().close(read);
    }

    @Test
    void aFullBlockingSocket() throws Exception {
        NativeBuffer fds = new NativeBuffer(8, 8);
        assertEquals(0, Native.syscall(SYS_SOCKETPAIR, AF_UNIX, SOCK_STREAM, 0, fds.address(), 0));
        int mine = fds.buffer().getInt(0);
        int peer = fds.buffer().getInt(4);
        fillStream(peer);
        EventFd wrapped = EventFd.wrap(peer);
        signalMany(wrapped);
        closeWithin(wrapped);
        Native.libc().close(mine);
    }

    @Test
    void aFifoNobodyReads() throws Exception {
        Path fifo = dir.resolve("fifo");
        assertEquals(0, new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor());
        int fd = Native.libc().open(fifo.toString(), O_RDWR, 0);
        assertTrue(fd >= 0);
        fillStream(fd);
        EventFd wrapped = EventFd.wrap(fd);
        signalMany(wrapped);
        closeWithin(wrapped);
    }

    @Test
    void aRegularFile() throws Exception {
        Path file = dir.resolve("regular");
        int fd = Native.libc().open(file.toString(), O_RDWR | O_CREAT, 0600);
        assertTrue(fd >= 0);
        EventFd wrapped = EventFd.wrap(fd);
        signalMany(wrapped);
        closeWithin(wrapped); // the 8-byte writes land in the frontend's own file, harmlessly
    }

    /** Fills a blocking eventfd's counter to its maximum, 0xfffffffffffffffe. */
    private static void fill(EventFd e) {
        NativeBuffer b = new NativeBuffer(8, 8);
        b.buffer().putLong(0, 0xfffffffffffffffeL);
        assertEquals(8, Native.libc().write(e.fd(), b.address(), 8));
    }

    /** Fills a pipe or socket until a write would block, leaving it blocking again. */
    private static void fillStream(int fd) {
        int flags = Native.libc().fcntl(fd, 3 /* F_GETFL */, 0);
        Native.libc().fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        NativeBuffer b = new NativeBuffer(65536, 8);
        while (Native.libc().write(fd, b.address(), 65536) > 0) {
            // until EAGAIN
        }
        while (Native.libc().write(fd, b.address(), 1) > 0) {
            // to the last byte
        }
        Native.libc().fcntl(fd, F_SETFL, flags);
    }

    private static void signalMany(EventFd e) throws Exception {
        CompletableFuture<Void> f = CompletableFuture.runAsync(() -> {
            for (int i = 0; i < 10_000; i++) {
                e.signal();
            }
        });
        f.get(20, TimeUnit.SECONDS); // a hang, not a speed bound
    }

    private static void closeWithin(EventFd e) throws Exception {
        CompletableFuture.runAsync(e::close).get(60, TimeUnit.SECONDS);
    }
}
