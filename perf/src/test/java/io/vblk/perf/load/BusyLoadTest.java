package io.vblk.perf.load;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;

import org.junit.jupiter.api.Test;

/** The contention rows' competing processes: they run while the column runs and none outlives it. */
class BusyLoadTest {
    @Test
    void startsTheAskedNumberAndKillsThemAll() throws Exception {
        List<Long> pids;
        try (BusyLoad load = BusyLoad.start(2)) {
            assertEquals(2, load.count());
            assertTrue(load.allAlive());
            pids = load.pids();
            for (long pid : pids) {
                assertTrue(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false), "busy process " + pid + " runs");
            }
        }
        for (long pid : pids) {
            assertFalse(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false), "busy process " + pid + " was killed");
        }
    }

    @Test
    void noneForTheIdleColumnAndANegativeCountIsRefused() {
        try (BusyLoad load = BusyLoad.start(0)) {
            assertEquals(0, load.count());
            assertTrue(load.allAlive());
        } catch (java.io.IOException e) {
            throw new AssertionError(e);
        }
        assertThrows(IllegalArgumentException.class, () -> BusyLoad.start(-1));
    }
}
