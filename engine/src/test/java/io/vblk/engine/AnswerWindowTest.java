package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * {@link Tuning#answerWindowNs()} in rounds driven directly on a thread that never started, under
 * the injected clock: after a round that published completions, with a deep queue at the back end,
 * a sleep first waits for the guest's answer with notifications still off; it does not wait when
 * the window has passed, when the back end holds a shallow queue, or twice for one publish. No
 * test here blocks: every sleep either finds work in the window or ends in {@link
 * IoThread#prepareSleep()}'s re-check, which finds the buffers offered (so the epoll wait is never
 * entered).
 */
class AnswerWindowTest {
    private static final long WINDOW_NS = 50_000;

    private static Tuning window(long ns) {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).answerWindowNs(ns).build();
    }

    /**
     * Round 1 submits {@code first} reads; the guest offers {@code second} more; round 2 reaps and
     * publishes the first lot (the window opens) and submits the second, which stay in flight
     * (the null back end behind a forwarder completes them at the next poll).
     */
    private static void publishWithInFlight(RoundRig rig, int first, int second) {
        rig.clock.update(1_000_000);
        rig.offerReads(first);
        assertEquals(first, rig.thread.doWork(), "round 1 pops the first lot");
        for (int i = 0; i < second; i++) {
            rig.addRead(1000 + i * 8L);
        }
        rig.driver.publishAvail();
        rig.thread.doWork();
        assertEquals(first, rig.reapAll(), "round 2 published the first lot");
        assertEquals(second, rig.thread.backend().inFlight(), "the second lot is with the back end");
    }

    /** Where the device last asked to be kicked (EVENT_IDX avail_event), as the guest reads it. */
    private static int availEvent(RoundRig rig) {
        return rig.driver.availEvent() & 0xffff;
    }

    /**
     * avail_event after a sleep that re-enabled notifications (avail_event = next_avail) and
     * woke: awake again, the thread parks it one behind next_avail (SplitQueue.disableNotifications).
     */
    private static int reEnabledThenParked(RoundRig rig) {
        return (rig.queue.ring.nextAvail() - 1) & 0xffff;
    }

    @Test
    @DisplayName("the guest's answer within the window cancels the sleep before notifications are re-enabled")
    void theGuestsAnswerCancelsTheSleep() {
        try (RoundRig rig = new RoundRig(window(WINDOW_NS), null)) {
            publishWithInFlight(rig, 10, 10);
            int before = availEvent(rig);
            assertNotEquals(reEnabledThenParked(rig), before, "precondition: avail_event is not where a sleep would leave it");
            rig.addRead(4096);
            rig.driver.publishAvail(); // the guest re-posts a slot it reaped
            rig.clock.advance(WINDOW_NS / 2);
            rig.thread.sleeper().sleep();
            assertEquals(1, rig.thread.answerWait().answersCaught(), "the window saw the answer");
            assertEquals(before, availEvent(rig), "notifications were never re-enabled: no kick asked for");
            assertEquals(1 + 10, rig.thread.doWork(), "the next round pops the answer (and reaps the second lot)");
        }
    }

    @Test
    @DisplayName("a window that has passed, a shallow queue, or no window at all: the usual sleep protocol at once")
    void noWaitOutsideTheWindow() {
        try (RoundRig rig = new RoundRig(window(WINDOW_NS), null)) {
            publishWithInFlight(rig, 10, 10);
            rig.addRead(4096);
            rig.driver.publishAvail();
            rig.clock.advance(WINDOW_NS);
            rig.thread.sleeper().sleep(); // prepareSleep's re-check finds the buffer: no epoll wait
            assertEquals(0, rig.thread.answerWait().answersCaught(), "the window had closed");
            assertEquals(reEnabledThenParked(rig), availEvent(rig), "notifications re-enabled (then parked awake)");
        }
        try (RoundRig rig = new RoundRig(window(WINDOW_NS), null)) {
            publishWithInFlight(rig, 10, AdaptivePollIdleStrategy.DEEP_IN_FLIGHT - 1);
            rig.addRead(4096);
            rig.driver.publishAvail();
            rig.thread.sleeper().sleep();
            assertEquals(0, rig.thread.answerWait().answersCaught(), "a shallow queue is left to the wait strategy");
            assertEquals(reEnabledThenParked(rig), availEvent(rig));
        }
        try (RoundRig rig = new RoundRig(window(0), null)) {
            publishWithInFlight(rig, 10, 10);
            rig.addRead(4096);
            rig.driver.publishAvail();
            rig.thread.sleeper().sleep();
            assertEquals(0, rig.thread.answerWait().answersCaught(), "off");
            assertEquals(reEnabledThenParked(rig), availEvent(rig));
        }
    }

    @Test
    @DisplayName("one wait per publish: a second sleep without new completions goes to the kernel's protocol")
    void oneWaitPerPublish() {
        try (RoundRig rig = new RoundRig(window(WINDOW_NS), null)) {
            publishWithInFlight(rig, 10, 10);
            rig.addRead(4096);
            rig.driver.publishAvail();
            rig.thread.sleeper().sleep();
            assertEquals(1, rig.thread.answerWait().answersCaught());
            rig.thread.sleeper().sleep(); // no round in between: the buffer is still there, found by the re-check
            assertEquals(1, rig.thread.answerWait().answersCaught(), "not waited again for the same publish");
            assertEquals(reEnabledThenParked(rig), availEvent(rig), "the usual protocol re-enabled notifications");
        }
    }

    @Test
    @DisplayName("a command in the inbox ends the wait as the guest's answer does")
    void aCommandEndsTheWait() {
        try (RoundRig rig = new RoundRig(window(WINDOW_NS), null)) {
            publishWithInFlight(rig, 10, 10);
            boolean[] ran = new boolean[1];
            rig.thread.submitCommand(t -> ran[0] = true);
            rig.thread.sleeper().sleep();
            assertEquals(1, rig.thread.answerWait().answersCaught(), "the command ended the wait");
            rig.thread.doWork();
            assertTrue(ran[0], "the next round ran it");
        }
    }

    @Test
    @DisplayName("adaptive: waits that run out close the window, and a closed window goes to the kernel's protocol at once")
    void theWindowCloses() {
        try (RoundRig rig = new RoundRig(window(WINDOW_NS), null)) {
            rig.clock.update(1_000_000);
            rig.offerReads(10);
            rig.thread.doWork();
            for (int i = 0; i < AnswerWindow.CLOSE_AFTER; i++) {
                // Each round publishes the last lot and submits a new one: the window opens anew.
                rig.offerReads(10);
                rig.thread.doWork();
                assertEquals(10, rig.reapAll(), "lot " + i + " published");
                assertEquals(WINDOW_NS, rig.thread.answerWait().windowNs(), "open before wait " + i);
                rig.clock.stepNs = 1_000; // each look at the clock moves it: the wait runs out
                assertEquals(false, rig.thread.answerWait().awaitAnswer(), "no answer in window " + i);
                rig.clock.stepNs = 0;
            }
            assertEquals(0, rig.thread.answerWait().windowNs(), "closed");
            rig.offerReads(10);
            rig.thread.doWork();
            assertEquals(10, rig.reapAll());
            rig.addRead(4096);
            rig.driver.publishAvail(); // the guest answers, but the closed window does not look
            rig.thread.sleeper().sleep(); // prepareSleep's re-check finds the buffer: no epoll wait
            assertEquals(0, rig.thread.answerWait().answersCaught(), "no wait: closed");
            assertEquals(reEnabledThenParked(rig), availEvent(rig), "notifications re-enabled (then parked awake)");
        }
    }

    @Test
    @DisplayName("not adaptive: waits that run out leave the window open")
    void aFixedWindowStays() {
        Tuning fixed = Tuning.builder().threadingMode(ThreadingMode.SHARED).answerWindowNs(WINDOW_NS).answerWindowAdaptive(false).build();
        try (RoundRig rig = new RoundRig(fixed, null)) {
            rig.clock.update(1_000_000);
            rig.offerReads(10);
            rig.thread.doWork();
            for (int i = 0; i < AnswerWindow.CLOSE_AFTER; i++) {
                rig.offerReads(10);
                rig.thread.doWork();
                assertEquals(10, rig.reapAll());
                rig.clock.stepNs = 1_000;
                assertEquals(false, rig.thread.answerWait().awaitAnswer());
                rig.clock.stepNs = 0;
            }
            assertEquals(WINDOW_NS, rig.thread.answerWait().windowNs());
            rig.offerReads(10);
            rig.thread.doWork();
            assertEquals(10, rig.reapAll());
            rig.addRead(4096);
            rig.driver.publishAvail();
            rig.thread.sleeper().sleep();
            assertEquals(1, rig.thread.answerWait().answersCaught(), "still waits, and catches the answer");
        }
    }

    @Test
    @DisplayName("the window is bounded: negative or above a second is refused")
    void theWindowIsChecked() {
        assertEquals(0, Tuning.builder().answerWindowNs(0).build().answerWindowNs());
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> Tuning.builder().answerWindowNs(-1));
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> Tuning.builder().answerWindowNs(1_000_000_001L));
    }
}
