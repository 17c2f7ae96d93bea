package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * {@link AnswerWindow}'s decisions: an adaptive window stays open while its waits catch the
 * guest's answer, closes after {@link AnswerWindow#CLOSE_AFTER} waits in a row that ran out, and
 * while closed waits once (the whole window) in {@link AnswerWindow#PROBE_EVERY} publishes, a
 * caught probe opening it again; a fixed window waits every time.
 */
class AnswerWindowDecisionTest {
    private static final long MAX = 40_000;

    @Test
    @DisplayName("waits that run out in a row close the window; a catch in between resets the count")
    void missesInARowCloseTheWindow() {
        AnswerWindow w = new AnswerWindow(MAX, true);
        for (int i = 1; i < AnswerWindow.CLOSE_AFTER; i++) {
            assertEquals(MAX, w.next(), "still open after " + (i - 1) + " misses");
            w.missed();
        }
        assertEquals(MAX, w.next());
        w.caught(); // the count starts again
        for (int i = 1; i < AnswerWindow.CLOSE_AFTER; i++) {
            assertEquals(MAX, w.next());
            w.missed();
        }
        assertEquals(MAX, w.next(), "open: the catch reset the count");
        w.missed();
        assertEquals(0, w.windowNs(), "closed after " + AnswerWindow.CLOSE_AFTER + " misses in a row");
        assertEquals(0, w.next(), "a closed window does not wait");
    }

    @Test
    @DisplayName("a closed window waits only for its probe, once in PROBE_EVERY publishes; a caught probe opens it")
    void aClosedWindowProbes() {
        AnswerWindow w = closed();
        for (int round = 0; round < 3; round++) {
            for (int i = 1; i < AnswerWindow.PROBE_EVERY; i++) {
                assertEquals(0, w.next(), "publish " + i + " of round " + round + " does not wait");
            }
            assertEquals(MAX, w.next(), "the probe waits the whole window");
            w.missed();
            assertEquals(0, w.windowNs(), "a probe that ran out leaves it closed");
        }
        for (int i = 1; i < AnswerWindow.PROBE_EVERY; i++) {
            w.next();
        }
        assertEquals(MAX, w.next());
        w.caught();
        assertEquals(MAX, w.next(), "open again: the next publish waits without a probe");
        w.missed();
        assertEquals(MAX, w.next(), "and one miss does not close it");
    }

    @Test
    @DisplayName("not adaptive: every publish waits, however many waits ran out")
    void aFixedWindowAlwaysWaits() {
        AnswerWindow w = new AnswerWindow(MAX, false);
        for (int i = 0; i < 3 * AnswerWindow.PROBE_EVERY; i++) {
            assertEquals(MAX, w.next());
            w.missed();
        }
    }

    @Test
    @DisplayName("a window of 0 never waits, adaptive or not")
    void zeroNeverWaits() {
        for (boolean adaptive : new boolean[] {true, false}) {
            AnswerWindow w = new AnswerWindow(0, adaptive);
            for (int i = 0; i < 2 * AnswerWindow.PROBE_EVERY; i++) {
                assertEquals(0, w.next());
                w.missed();
            }
        }
    }

    private static AnswerWindow closed() {
        AnswerWindow w = new AnswerWindow(MAX, true);
        for (int i = 0; i < AnswerWindow.CLOSE_AFTER; i++) {
            w.next();
            w.missed();
        }
        assertEquals(0, w.windowNs());
        return w;
    }
}
