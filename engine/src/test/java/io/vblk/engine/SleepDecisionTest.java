package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * The kernel sleep's own decisions ({@link IoThread#prepareSleep()}, which every idle strategy
 * that sleeps ends in), on a thread that is never started and under the injected clock: whether
 * it may sleep, for how long, and that the guest's notifications are on exactly while it sleeps
 * (the no-lost-kick pattern). No epoll wait happens: the test stops at the decision.
 */
class SleepDecisionTest {
    private static Tuning inline() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
    }

    @Test
    @DisplayName("buffers the guest published after the round cancel the sleep; with nothing left, it sleeps with notifications on")
    void aRingThatGainedBuffersCancelsTheSleep() {
        try (RoundRig rig = new RoundRig(inline(), null, true)) {
            assertEquals(0, rig.thread.doWork());
            rig.addRead(0);
            rig.driver.publishAvail(); // with notifications off: nothing but the re-check finds it
            assertEquals(IoThread.WAKE_NOW, rig.thread.prepareSleep(), "the re-check after re-enabling finds the buffer");
            rig.thread.finishSleep();
            assertEquals(2, rig.thread.doWork(), "popped and completed");
            assertEquals(-1, rig.thread.prepareSleep(), "nothing left: sleep without a timeout");
            rig.addRead(8);
            assertTrue(rig.driver.publishAvail(), "asleep: the guest must kick");
            rig.thread.finishSleep();
            rig.addRead(16);
            assertFalse(rig.driver.publishAvail(), "awake again: notifications suppressed");
        }
    }

    @Test
    @DisplayName("a command in the inbox cancels the sleep")
    void aCommandCancelsTheSleep() {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            assertEquals(-1, rig.thread.prepareSleep());
            rig.thread.finishSleep();
            boolean[] ran = new boolean[1];
            rig.thread.submitCommand(t -> ran[0] = true);
            assertEquals(IoThread.WAKE_NOW, rig.thread.prepareSleep(), "a command waits in the inbox");
            rig.thread.finishSleep();
            rig.thread.doWork();
            assertTrue(ran[0], "the round ran it");
            assertEquals(-1, rig.thread.prepareSleep());
            rig.thread.finishSleep();
        }
    }

    @Test
    @DisplayName("a throttled queue: the sleep times out at the throttle's deadline by the injected clock, and not at all once it has passed")
    void throttleDeadlineBoundsTheSleep() {
        try (RoundRig rig = new RoundRig(inline(), new Throttle(1_000, 0, 2))) {
            rig.offerReads(10);
            rig.clock.update(1_000_000_000L);
            rig.thread.doWork(); // the burst
            rig.thread.doWork(); // its completions; the throttle allows no pop at the same instant
            long waitNs = rig.queue.throttledUntilNs - rig.clock.nanoTime();
            assertTrue(waitNs > 0, "throttled until a deadline in the future");
            assertEquals(TimeUnit.NANOSECONDS.toMillis(waitNs) + 1, rig.thread.prepareSleep(),
                    "sleeps until just past the deadline, whatever the ring holds");
            rig.thread.finishSleep();
            rig.clock.advance(waitNs / 2);
            assertEquals(TimeUnit.NANOSECONDS.toMillis(waitNs - waitNs / 2) + 1, rig.thread.prepareSleep(), "less as time passes");
            rig.thread.finishSleep();
            rig.clock.update(rig.queue.throttledUntilNs);
            assertEquals(IoThread.WAKE_NOW, rig.thread.prepareSleep(), "the deadline has come: do not sleep");
            rig.thread.finishSleep();
        }
    }
}
