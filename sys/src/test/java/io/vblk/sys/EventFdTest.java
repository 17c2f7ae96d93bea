package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class EventFdTest {
    @Test
    void signalsAccumulateAndReadResets() {
        try (EventFd e = EventFd.create(true)) {
            assertEquals(-Errno.EAGAIN, e.read());
            assertEquals(0, e.await(0));
            e.signal();
            e.signal();
            e.signal();
            assertEquals(1, e.await(0));
            assertEquals(3, e.read());
            assertEquals(-Errno.EAGAIN, e.read());
        }
    }

    @Test
    void awaitWakesOnSignalFromAnotherThread() throws Exception {
        try (EventFd e = EventFd.create(false)) {
            Thread t = new Thread(() -> {
                try {
                    Thread.sleep(50);
                } catch (InterruptedException ignored) {
                    Thread.currentThread().interrupt();
                }
                e.signal();
            });
            t.start();
            assertEquals(1, e.await(5_000));
            assertEquals(1, e.read());
            t.join();
        }
    }

    @Test
    void closedDescriptorGivesErrorCodesNotExceptions() {
        EventFd e = EventFd.create(true);
        e.close();
        assertTrue(e.signal() < 0);
        assertTrue(e.read() < 0);
    }

    @Test
    void wrapRefusesNegativeDescriptor() {
        assertThrows(IllegalArgumentException.class, () -> EventFd.wrap(-1));
    }

    @Test
    void aClosedEventFdNeverWritesTheNumberAnotherFileReuses() {
        EventFd closed = EventFd.create(true);
        int number = closed.fd();
        closed.close();
        try (EventFd other = EventFd.create(true)) {
            org.junit.jupiter.api.Assumptions.assumeTrue(other.fd() == number, "the kernel handed out another number");
            assertEquals(-Errno.EBADF, closed.signal());
            assertEquals(-Errno.EAGAIN, other.read(), "written through a closed EventFd");
        }
    }

    /**
     * A stale EventFd (a back end's completion event, read by a reaper after the back end closed)
     * must not read the counter of whatever took its number, nor report that one's readiness: a
     * read consumed the other eventfd's wake-up (or 8 bytes of a socket's stream).
     */
    @Test
    void aClosedEventFdNeverReadsOrPollsTheNumberAnotherFileReuses() {
        EventFd closed = EventFd.create(true);
        int number = closed.fd();
        closed.close();
        try (EventFd other = EventFd.create(true)) {
            org.junit.jupiter.api.Assumptions.assumeTrue(other.fd() == number, "the kernel handed out another number");
            assertEquals(0, other.signal());
            assertEquals(-Errno.EBADF, closed.await(0), "not the other's readiness");
            assertEquals(-Errno.EBADF, closed.read());
            assertEquals(1, other.read(), "the other's wake-up is still there");
        }
    }

    @Test
    void aDuplicateOutlivesTheOriginal() {
        EventFd original = EventFd.create(true);
        try (EventFd copy = original.duplicate()) {
            original.close();
            assertEquals(0, copy.signal());
            assertEquals(1, copy.read());
        }
        assertThrows(IllegalStateException.class, original::duplicate);
    }
}
