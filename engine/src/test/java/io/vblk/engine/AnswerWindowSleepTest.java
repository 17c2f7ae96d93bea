package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.agrona.concurrent.CachedNanoClock;
import org.junit.jupiter.api.Test;

/**
 * {@link AnswerWindowSleep} on its own, under an injected clock and yielder: the wait for the
 * guest's answer happens in the idle path, before the wrapped kernel sleep, and only after a
 * publish; an answer ends it without sleeping, a window that runs out hands over to the sleep.
 */
class AnswerWindowSleepTest {
    private static final long WINDOW_NS = 50_000;
    private static final long STEP_NS = 10_000;

    private final CachedNanoClock clock = new CachedNanoClock();
    private int sleeps;
    private int yields;
    /** How many looks find no answer before one does (MAX_VALUE: none ever does). */
    private int looksBeforeAnswer = Integer.MAX_VALUE;
    private int looks;

    private AnswerWindowSleep wait(boolean worthWaiting) {
        return new AnswerWindowSleep(() -> sleeps++, new AnswerWindow(WINDOW_NS, false), clock,
                () -> worthWaiting, () -> looks++ >= looksBeforeAnswer, () -> true, () -> {
                    yields++;
                    clock.advance(STEP_NS);
                });
    }

    @Test
    void withoutAPublishItSleepsAtOnce() {
        AnswerWindowSleep w = wait(true);
        w.sleep();
        assertEquals(1, sleeps);
        assertEquals(0, yields);
        assertEquals(0, looks, "nothing to wait for");
    }

    @Test
    void anAnswerWithinTheWindowEndsItWithoutSleeping() {
        AnswerWindowSleep w = wait(true);
        looksBeforeAnswer = 2;
        w.published(clock.nanoTime());
        w.sleep();
        assertEquals(0, sleeps, "the answer came: no kernel sleep");
        assertEquals(2, yields, "it yielded between the looks");
        assertEquals(1, w.answersCaught());
        w.sleep();
        assertEquals(1, sleeps, "one wait per publish: the next sleep goes to the kernel");
    }

    @Test
    void aWindowThatRunsOutHandsOverToTheSleep() {
        AnswerWindowSleep w = wait(true);
        w.published(clock.nanoTime());
        w.sleep();
        assertEquals(WINDOW_NS / STEP_NS, yields, "it yields until the window (on the injected clock) closes");
        assertEquals(1, sleeps);
        assertEquals(0, w.answersCaught());
    }

    @Test
    void aShallowQueueIsLeftToTheSleep() {
        AnswerWindowSleep w = wait(false);
        looksBeforeAnswer = 0;
        w.published(clock.nanoTime());
        w.sleep();
        assertEquals(1, sleeps);
        assertEquals(0, yields);
        assertEquals(0, looks);
    }
}
