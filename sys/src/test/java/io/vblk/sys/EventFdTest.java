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
}
