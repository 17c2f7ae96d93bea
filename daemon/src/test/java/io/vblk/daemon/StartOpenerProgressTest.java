package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

/**
 * Session 17: {@link StartOpener} told its progress (the daemon sends it to systemd as a STATUS
 * datagram, a send that blocks while systemd's socket is full) holding the lock every worker
 * takes after an open and before the next: one slow send held every other open of the start.
 * Here the first progress call blocks; every entry must still be opened meanwhile, and the
 * progress told afterwards is serialized, increasing, and ends with the final tally.
 */
class StartOpenerProgressTest {
    private static final int ENTRIES = 12;

    @Test
    void aProgressCallThatBlocksHoldsNoOpen() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch allOpened = new CountDownLatch(ENTRIES);
        List<int[]> told = new ArrayList<>();
        AtomicBoolean inProgress = new AtomicBoolean();
        AtomicBoolean overlapped = new AtomicBoolean();
        AtomicInteger failedResult = new AtomicInteger(-1);
        Thread start = new Thread(() -> failedResult.set(StartOpener.run(ENTRIES, 4, i -> {
            allOpened.countDown();
            return i % 3 == 0; // entries 0, 3, 6, 9 are kept as failed
        }, (tried, failed) -> {
            if (!inProgress.compareAndSet(false, true)) {
                overlapped.set(true);
            }
            boolean first;
            synchronized (told) {
                told.add(new int[] {tried, failed});
                first = told.size() == 1;
            }
            if (first) {
                try {
                    release.await(60, TimeUnit.SECONDS); // a send blocked on systemd's full socket
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            inProgress.set(false);
        })), "start");
        start.start();
        try {
            assertTrue(allOpened.await(30, TimeUnit.SECONDS), // a hang guard: the opens take microseconds
                    "entries left unopened while the first progress call was held: " + allOpened.getCount());
        } finally {
            release.countDown();
            start.join(60_000);
        }
        assertFalse(start.isAlive());
        assertEquals(4, failedResult.get());
        assertFalse(overlapped.get(), "progress was told by two workers at once");
        synchronized (told) {
            int[] last = told.get(told.size() - 1);
            assertEquals(ENTRIES, last[0], "the last call tells every entry tried");
            assertEquals(4, last[1]);
            for (int i = 1; i < told.size(); i++) {
                assertTrue(told.get(i)[0] > told.get(i - 1)[0], "told in increasing order");
            }
        }
    }
}
