package io.vblk.hostmem;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

/** The dirty log's bitmap: vhost-user's layout, ranges, bounds, and atomic marks from many threads. */
class DirtyLogTest {
    private static final long PAGE = DirtyLog.PAGE_SIZE;

    /** vhost-user.rst: page = addr / 4096, log[page / 8] |= 1 << page % 8. */
    private static boolean vhostBit(UnsafeBuffer b, long page) {
        return (b.getByte((int) (page / 8)) & (1 << (page % 8))) != 0;
    }

    @Test
    void marksEveryPageARangeTouchesInVhostUsersLayout() {
        UnsafeBuffer b = new UnsafeBuffer(new byte[64]); // 512 pages
        DirtyLog log = new DirtyLog(b);
        assertEquals(512, log.pages());
        log.mark(5 * PAGE + 4095, 2);         // straddles pages 5 and 6
        log.mark(62 * PAGE, 3 * PAGE);        // pages 62, 63, 64: across a 64-bit word
        log.mark(100 * PAGE + 17, 1);
        log.mark(200 * PAGE, 130 * PAGE);     // three words, whole and partial
        log.mark(7 * PAGE, 0);                // nothing
        for (long p = 0; p < 512; p++) {
            boolean want = p == 5 || p == 6 || (p >= 62 && p <= 64) || p == 100 || (p >= 200 && p < 330);
            assertEquals(want, vhostBit(b, p), "page " + p);
            assertEquals(want, log.isDirty(p * PAGE), "page " + p);
        }
        assertEquals(0, log.outOfRange());
    }

    @Test
    void marksBeyondTheBitmapAreDroppedAndCounted() {
        UnsafeBuffer b = new UnsafeBuffer(new byte[16 + 16]);
        UnsafeBuffer inside = new UnsafeBuffer(b, 0, 16); // 128 pages; the rest must stay untouched
        DirtyLog log = new DirtyLog(inside);
        log.mark(126 * PAGE, 4 * PAGE);       // 126, 127 inside; 128, 129 not
        log.mark(1L << 40, 1);
        log.mark(-PAGE, 2 * PAGE);            // wraps past 2^64
        log.mark(Long.MAX_VALUE, Long.MAX_VALUE);
        assertTrue(log.isDirty(126 * PAGE) && log.isDirty(127 * PAGE));
        assertFalse(log.isDirty(128 * PAGE));
        assertEquals(4, log.outOfRange());
        for (int i = 16; i < 32; i++) {
            assertEquals(0, b.getByte(i), "byte " + i + " past the bitmap");
        }
    }

    @Test
    void bitmapsThatAreNotWholeAlignedWordsAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> new DirtyLog(new UnsafeBuffer(new byte[0])));
        assertThrows(IllegalArgumentException.class, () -> new DirtyLog(new UnsafeBuffer(new byte[12])));
        assertThrows(IllegalArgumentException.class, () -> new DirtyLog(new UnsafeBuffer(new byte[24], 4, 16)));
        assertEquals(16, DirtyLog.bitmapBytes(65 * PAGE));
        assertEquals(8, DirtyLog.bitmapBytes(1));
    }

    @Test
    void marksFromManyThreadsAreNeverLost() throws Exception {
        UnsafeBuffer b = new UnsafeBuffer(new byte[4096]); // 32768 pages
        DirtyLog log = new DirtyLog(b);
        int threads = 4;
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            int me = t;
            workers.add(new Thread(() -> {
                // Interleaved pages: every word is contended by every thread.
                for (long p = me; p < 32768; p += threads) {
                    log.mark(p * PAGE, 1);
                }
            }));
        }
        workers.forEach(Thread::start);
        for (Thread w : workers) {
            w.join();
        }
        for (int i = 0; i < 4096; i += 8) {
            assertEquals(-1L, b.getLong(i), "word at " + i);
        }
    }

    @Test
    void hostAddressesAreLoggedByTheirGuestPage() {
        try (GuestMemory mem = GuestMemory.builder().addMemfd(0, 1 << 20).addMemfd(4L << 30, 1 << 20).build()) {
            DirtyLog log = new DirtyLog(new UnsafeBuffer(new byte[(int) DirtyLog.bitmapBytes((4L << 30) + (1 << 20))]));
            long high = mem.hostAddress((4L << 30) + 3 * PAGE + 10, 1, true);
            log.markHost(mem, high, PAGE);
            assertTrue(log.isDirty((4L << 30) + 3 * PAGE) && log.isDirty((4L << 30) + 4 * PAGE));
            assertFalse(log.isDirty(3 * PAGE), "not the low region's page");
            assertEquals(-1, mem.hostToGuest(12345));
            log.markHost(mem, 12345, 1);
            assertEquals(1, log.outOfRange(), "an address in no region is counted, not marked");
            Random r = new Random(1);
            for (int i = 0; i < 100; i++) {
                long gpa = r.nextInt(1 << 20);
                assertEquals(gpa, mem.hostToGuest(mem.hostAddress(gpa, 1, false)));
            }
        }
    }
}
