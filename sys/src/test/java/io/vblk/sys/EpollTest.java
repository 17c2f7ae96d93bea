package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;

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
}
