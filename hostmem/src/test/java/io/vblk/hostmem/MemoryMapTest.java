package io.vblk.hostmem;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

class MemoryMapTest {
    private static final long MS = TimeUnit.MILLISECONDS.toNanos(1);

    private static GuestMemory table() {
        return GuestMemory.builder().guarded(true).addMemfd(0, 64 * 1024).build();
    }

    @Test
    void installPublishesTheNewTableAndReturnsTheOldOne() {
        GuestMemory first = table();
        GuestMemory second = table();
        MemoryMap map = new MemoryMap(first);
        assertSame(first, map.current());
        assertSame(first, map.install(second));
        assertSame(second, map.current());
        assertEquals(1, map.epoch());
        assertThrows(IllegalArgumentException.class, () -> map.retire(second, MS));
        assertTrue(map.retire(first, MS), "no readers: quiescent at once");
        assertTrue(first.isClosed());
        second.close();
    }

    @Test
    void anOldTableStaysMappedUntilEveryReaderPassesAQuiescentPoint() {
        GuestMemory first = table();
        MemoryMap map = new MemoryMap(first);
        MemoryMap.Reader a = map.register();
        MemoryMap.Reader b = map.register();
        GuestMemory old = map.install(table());
        assertFalse(map.isQuiescent());
        a.quiescent();
        assertFalse(map.isQuiescent(), "b may still hold an address from the old table");
        assertFalse(map.retire(old, MS));
        assertFalse(old.isClosed(), "a timed-out retire leaves the table mapped");
        b.quiescent();
        assertTrue(map.isQuiescent());
        assertTrue(map.retire(old, MS));
        assertTrue(old.isClosed());
        a.close();
        b.close();
        map.current().close();
    }

    @Test
    void offlineAndClosedReadersNeverDelayReclamation() {
        MemoryMap map = new MemoryMap(table());
        MemoryMap.Reader sleeper = map.register();
        MemoryMap.Reader gone = map.register();
        sleeper.offline();
        gone.close();
        GuestMemory old = map.install(table());
        assertTrue(map.isQuiescent());
        assertTrue(map.retire(old, MS));
        sleeper.online();
        assertSame(map.current(), sleeper.current());
        GuestMemory older = map.install(table());
        assertFalse(map.isQuiescent(), "an online reader counts again");
        sleeper.quiescent();
        assertTrue(map.retire(older, MS));
        map.current().close();
    }

    /**
     * A reader touches guest memory continuously while the control thread swaps tables and
     * unmaps the old ones by the rule. Guard pages around every mapping: a use after unmap would
     * kill the JVM, not fail an assertion.
     */
    @Test
    void aReaderNeverTouchesAnUnmappedTable() throws Exception {
        MemoryMap map = new MemoryMap(table());
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong touches = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Thread reader = new Thread(() -> {
            try (MemoryMap.Reader r = map.register()) {
                long n = 0;
                while (!stop.get()) {
                    GuestMemory mem = r.current();
                    for (int i = 0; i < 64; i++) {
                        long host = mem.hostAddress(i * 1024L, 8, true);
                        UnsafeBuffer b = new UnsafeBuffer(host, 8);
                        b.putLong(0, b.getLong(0) + 1);
                        n++;
                    }
                    r.quiescent();
                    if ((n & 0xfff) == 0) {
                        r.offline(); // as a data-plane thread does before blocking
                        Thread.yield();
                        r.online();
                    }
                }
                touches.set(n);
            } catch (Throwable t) {
                failure.set(t);
            }
        });
        reader.start();
        int swaps = 0;
        // At least 500 ms and more than 10 swaps, whichever comes last (up to 60 s): each swap
        // waits for the reader to pass a quiescent point, and on a loaded machine a reader that
        // gets the CPU seldom made fewer than 10 of them fit in a fixed 500 ms.
        long start = System.nanoTime();
        while ((System.nanoTime() - start < 500 * MS || swaps <= 10) && System.nanoTime() - start < 60_000 * MS) {
            GuestMemory old = map.install(table());
            assertTrue(map.retire(old, 30_000 * MS), "reader never became quiescent"); // a hang guard
            swaps++;
        }
        stop.set(true);
        reader.join();
        map.current().close();
        assertEquals(null, failure.get());
        assertTrue(swaps > 10, "swaps " + swaps);
        assertTrue(touches.get() > 0);
    }
}
