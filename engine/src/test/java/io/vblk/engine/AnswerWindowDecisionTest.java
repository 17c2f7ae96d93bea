package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * {@link AnswerWindow}'s decisions: an adaptive window opens to its bound when a wait caught the
 * guest's answer, halves on each wait that ran out, closes below a quarter of the bound, and
 * while closed waits once (the whole bound) in {@link AnswerWindow#PROBE_EVERY} publishes; a
 * fixed window waits the bound every time.
 */
class AnswerWindowDecisionTest {
    private static final long MAX = 40_000;

    @Test
    @DisplayName("waits that run out halve the window and close it below a quarter of the bound")
    void missesCloseTheWindow() {
        AnswerWindow w = new AnswerWindow(MAX, true);
        assertEquals(MAX, w.next(), "open at first");
        w.missed();
        assertEquals(MAX / 2, w.next());
        w.missed();
        assertEquals(MAX / 4, w.next(), "a quarter of the bound still waits");
        w.missed();
        assertEquals(0, w.windowNs(), "closed after the third wait that ran out");
    }

    @Test
    @DisplayName("a closed window waits only for its probe, once in PROBE_EVERY publishes; a caught probe opens it fully")
    void aClosedWindowProbes() {
        AnswerWindow w = closed();
        for (int round = 0; round < 3; round++) {
            for (int i = 1; i < AnswerWindow.PROBE_EVERY; i++) {
                assertEquals(0, w.next(), "publish " + i + " of round " + round + " does not wait");
            }
            assertEquals(MAX, w.next(), "the probe waits the whole bound");
            w.missed();
            assertEquals(0, w.windowNs(), "a probe that ran out leaves it closed");
        }
        for (int i = 1; i < AnswerWindow.PROBE_EVERY; i++) {
            w.next();
        }
        assertEquals(MAX, w.next());
        w.caught();
        assertEquals(MAX, w.next(), "open again: the next publish waits without a probe");
        assertEquals(MAX, w.next());
    }

    @Test
    @DisplayName("a caught wait restores a shrunk window to the bound")
    void aCatchRestoresTheBound() {
        AnswerWindow w = new AnswerWindow(MAX, true);
        w.next();
        w.missed();
        w.next();
        w.missed();
        assertEquals(MAX / 4, w.next());
        w.caught();
        assertEquals(MAX, w.next());
    }

    @Test
    @DisplayName("not adaptive: every publish waits the bound, however many waits ran out")
    void aFixedWindowAlwaysWaits() {
        AnswerWindow w = new AnswerWindow(MAX, false);
        for (int i = 0; i < 3 * AnswerWindow.PROBE_EVERY; i++) {
            assertEquals(MAX, w.next());
            w.missed();
        }
    }

    @Test
    @DisplayName("a bound of 0 never waits, adaptive or not")
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
        for (int i = 0; i < 3; i++) {
            w.next();
            w.missed();
        }
        assertEquals(0, w.windowNs());
        return w;
    }
}
