package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.junit.jupiter.api.Test;

class EpollTest {
    @Test
    void reportsReadyDescriptorsWithTheirData() {
        try (Epoll epoll = new Epoll(4); EventFd a = EventFd.create(true); EventFd b = EventFd.create(true)) {
            epoll.add(a.fd(), Linux.EPOLLIN, 7);
            epoll.add(b.fd(), Linux.EPOLLIN, 9);
            assertEquals(0, epoll.await(0));
            b.signal();
            assertEquals(1, epoll.await(1000));
            assertEquals(9, epoll.data(0));
            assertEquals(Linux.EPOLLIN, epoll.events(0) & Linux.EPOLLIN);
            b.read();
            epoll.remove(b.fd());
            b.signal();
            assertEquals(0, epoll.await(0));
            epoll.remove(b.fd()); // removing twice is harmless
        }
    }

    /**
     * The frontend-fuzzer case behind "epoll_ctl(ADD) errno 17": a kick fd closed while still
     * registered, its file kept alive elsewhere, and the same file back under the same number.
     */
    @Test
    void watchTakesOverARegistrationLeftByAClosedNumberOfTheSameFile() {
        int number = (int) Native.check(Native.libc().eventfd(0, Linux.EFD_CLOEXEC | Linux.EFD_NONBLOCK), "eventfd");
        int elsewhere = Native.libc().dup(number); // the frontend's copy of the file
        try (Epoll epoll = new Epoll(4); EventFd other = EventFd.wrap(elsewhere)) {
            epoll.add(number, Linux.EPOLLIN, 1);
            Native.libc().close(number); // closed without remove: epoll keeps the registration
            try (EventFd back = EventFd.wrap(Native.libc().dup(elsewhere))) { // the lowest free number
                assumeTrue(back.fd() == number, "another thread took descriptor " + number);
                NativeException e = assertThrows(NativeException.class, () -> epoll.add(back.fd(), Linux.EPOLLIN, 2));
                assertEquals(Errno.EEXIST, e.errno());
                epoll.watch(back.fd(), Linux.EPOLLIN, 2);
                other.signal();
                assertEquals(1, epoll.await(1000));
                assertEquals(2, epoll.data(0));
            }
        }
    }
}
