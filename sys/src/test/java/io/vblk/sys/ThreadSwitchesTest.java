package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** getrusage(RUSAGE_THREAD)'s switch counts against the kernel's own per-thread status file. */
class ThreadSwitchesTest {
    @Test
    @DisplayName("voluntary and involuntary counts are the calling thread's, as /proc/thread-self/status reports them")
    void countsMatchTheKernelsStatusFile() throws Exception {
        ThreadSwitches switches = new ThreadSwitches();
        for (int i = 0; i < 20; i++) {
            Thread.sleep(1); // each sleep is a voluntary switch: the counts must differ from here on
        }
        long volBefore = status("voluntary_ctxt_switches");
        long invBefore = status("nonvoluntary_ctxt_switches");
        long vol = switches.voluntary();
        long inv = switches.involuntary();
        long volAfter = status("voluntary_ctxt_switches");
        long invAfter = status("nonvoluntary_ctxt_switches");
        assertTrue(volBefore >= 20, "slept 20 times: " + volBefore);
        assertTrue(volBefore <= vol && vol <= volAfter, volBefore + " <= " + vol + " <= " + volAfter);
        assertTrue(invBefore <= inv && inv <= invAfter, invBefore + " <= " + inv + " <= " + invAfter);
    }

    private static long status(String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/thread-self/status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.substring(field.length() + 1).trim());
            }
        }
        throw new IllegalStateException("no " + field + " in /proc/thread-self/status");
    }
}
