package io.vblk.perf.load;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** A backend process's CPU and run-queue wait, and the metering thread's own wait. */
class ProcessMeterTest {
    @Test
    void aProcessCompetingForTooFewCpusWaitsOnTheRunQueue() throws Exception {
        // One busy process more than there are CPUs: whichever is metered is runnable all the
        // time and cannot run all the time, so part of the window is spent waiting for a CPU.
        try (BusyLoad load = BusyLoad.start(Runtime.getRuntime().availableProcessors() + 1)) {
            ProcessMeter meter = new ProcessMeter(load.pids().get(0));
            meter.begin();
            Thread.sleep(300);
            meter.end();
            assertTrue(meter.cpuNs() > 0, "cpu " + meter.cpuNs());
            assertTrue(meter.waitNs() > 0, "wait " + meter.waitNs());
            assertFalse(Double.isNaN(meter.callerWaitNs()), "the calling thread's own wait is read");
        }
    }

    @Test
    void noProcessMetersNothing() {
        ProcessMeter meter = new ProcessMeter(-1);
        meter.begin();
        meter.end();
        assertTrue(Double.isNaN(meter.cpuNs()));
        assertTrue(Double.isNaN(meter.waitNs()));
    }
}
