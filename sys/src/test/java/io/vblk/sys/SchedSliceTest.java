package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** sched_setattr's custom slice on the calling thread, against the kernel's own per-thread sched file. */
class SchedSliceTest {
    @Test
    @DisplayName("a requested slice is the calling thread's, as sched_getattr and /proc/thread-self/sched report it, until reset; other threads keep theirs")
    void aRequestedSliceIsTheCallingThreads() throws Exception {
        long before = SchedSlice.current();
        assumeTrue(before > 0, "this kernel reports no slice (before Linux 6.12, no EEVDF custom slices): " + before);
        AtomicReference<long[]> seen = new AtomicReference<>();
        AtomicReference<Throwable> failed = new AtomicReference<>();
        Thread t = new Thread(() -> {
            try {
                long rc = SchedSlice.request(200_000);
                long[] asked = {rc, SchedSlice.current(), procSlice()};
                long reset = SchedSlice.reset();
                seen.set(new long[] {asked[0], asked[1], asked[2], reset, SchedSlice.current(), procSlice()});
            } catch (Throwable e) {
                failed.set(e);
            }
        });
        t.start();
        t.join();
        if (failed.get() != null) {
            throw new AssertionError(failed.get());
        }
        assertEquals(0, seen.get()[0], "the kernel took the slice");
        assertEquals(200_000, seen.get()[1], "sched_getattr reports it back");
        assertEquals(200_000, seen.get()[2], "the scheduler uses it (se.slice)");
        assertEquals(0, seen.get()[3], "the kernel took the reset");
        assertEquals(before, seen.get()[4], "reset: the default slice again (sched_getattr)");
        assertEquals(before, seen.get()[5], "reset: the default slice again (se.slice)");
        assertEquals(before, SchedSlice.current(), "the test's own thread is untouched");
    }

    @Test
    @DisplayName("a slice outside the kernel's 0.1-100 ms is refused before any call")
    void outOfRangeIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> SchedSlice.request(99_999));
        assertThrows(IllegalArgumentException.class, () -> SchedSlice.request(100_000_001));
    }

    private static long procSlice() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/thread-self/sched"))) {
            if (line.startsWith("se.slice")) {
                return Long.parseLong(line.substring(line.indexOf(':') + 1).trim());
            }
        }
        throw new IllegalStateException("no se.slice in /proc/thread-self/sched");
    }
}
