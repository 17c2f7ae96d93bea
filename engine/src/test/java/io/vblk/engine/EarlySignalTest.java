package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** {@link EarlySignal}'s decisions: a fixed point stays put, an adaptive one follows the guest's answers. */
class EarlySignalTest {
    @Test
    @DisplayName("a fixed point ignores the guest's answers and short rounds")
    void fixedStays() {
        EarlySignal e = new EarlySignal(24, 256);
        e.judged(true);
        e.judged(false);
        e.roundTooShort();
        assertEquals(24, e.chains());
    }

    @Test
    @DisplayName("adaptive: later after a guest that answered before the round ended, earlier after one that had not")
    void adaptiveFollowsTheGuest() {
        EarlySignal e = new EarlySignal(Tuning.EARLY_SIGNAL_ADAPTIVE, 256);
        assertEquals(EarlySignal.START_CHAINS, e.chains());
        e.judged(true);
        assertEquals(EarlySignal.START_CHAINS + EarlySignal.STEP_UP, e.chains(), "woken too early: publish later");
        e.judged(false);
        assertEquals(EarlySignal.START_CHAINS + EarlySignal.STEP_UP - EarlySignal.STEP_DOWN, e.chains(),
                "still asleep at the round's end: publish a little earlier");
        e.roundTooShort();
        assertEquals(EarlySignal.START_CHAINS + EarlySignal.STEP_UP - 2 * EarlySignal.STEP_DOWN, e.chains(),
                "a round that ended before the point: earlier");
    }

    @Test
    @DisplayName("adaptive: bounded by the minimum and by the ring's size")
    void adaptiveBounded() {
        EarlySignal e = new EarlySignal(Tuning.EARLY_SIGNAL_ADAPTIVE, 100);
        for (int i = 0; i < 100; i++) {
            e.judged(true);
        }
        assertEquals(100, e.chains());
        for (int i = 0; i < 100; i++) {
            e.judged(false);
        }
        assertEquals(EarlySignal.MIN_CHAINS, e.chains());
        e.roundTooShort();
        assertEquals(EarlySignal.MIN_CHAINS, e.chains());
        assertEquals(16, new EarlySignal(Tuning.EARLY_SIGNAL_ADAPTIVE, 16).chains(), "starts within a small ring");
    }

    @Test
    @DisplayName("the setting is -1 (adaptive), 0 (off) or 1..65536, off by default")
    void rangeChecked() {
        assertEquals(Tuning.DEFAULT_EARLY_SIGNAL, Tuning.builder().build().earlySignal(), "vblk.earlySignal is unset in tests");
        assertEquals(Tuning.EARLY_SIGNAL_ADAPTIVE, Tuning.builder().earlySignal(-1).build().earlySignal());
        assertThrows(IllegalArgumentException.class, () -> Tuning.builder().earlySignal(-2));
        assertThrows(IllegalArgumentException.class, () -> Tuning.builder().earlySignal(65537));
    }
}
