package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.Arrays;

/** A sink that records each completion by user data and fails on a second one for the same. */
final class Recorder implements CompletionSink {
    private final long[] results;
    private final boolean[] seen;
    private int count;

    Recorder(int capacity) {
        results = new long[capacity];
        seen = new boolean[capacity];
    }

    @Override
    public synchronized void complete(long userData, long result) {
        int i = (int) userData;
        if (i < 0 || i >= seen.length) {
            fail("completion for unknown user data " + userData);
        }
        if (seen[i]) {
            fail("second completion for user data " + userData + " (result " + result + ")");
        }
        seen[i] = true;
        results[i] = result;
        count++;
    }

    synchronized int count() {
        return count;
    }

    synchronized long result(int userData) {
        assertTrue(seen[userData], "no completion for " + userData);
        return results[userData];
    }

    synchronized boolean seen(int userData) {
        return seen[userData];
    }

    synchronized void assertAll(int first, int endExclusive, long expected) {
        for (int i = first; i < endExclusive; i++) {
            assertTrue(seen[i], "no completion for " + i);
            assertEquals(expected, results[i], "result of " + i);
        }
    }

    synchronized void assertNone(int first, int endExclusive) {
        for (int i = first; i < endExclusive; i++) {
            assertFalse(seen[i], "unexpected completion for " + i);
        }
    }

    synchronized void reset() {
        Arrays.fill(seen, false);
        count = 0;
    }
}
