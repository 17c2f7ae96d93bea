package io.vblk.engine;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A diagnostic timeline of the hand-off between the guest and the I/O thread, off unless the JVM
 * runs with {@code -Dvblk.roundTrace=true} (then {@link #ON}, a constant the JIT folds: a build
 * without it pays nothing). Events are per round, per sleep, per interrupt and per guest pass,
 * never per request: the I/O thread's round start, what it reaped and published, what it popped,
 * each submission's start and end, each kernel sleep; and, from the benchmark's guest, its wake-ups,
 * reaps, kicks and sleeps. Each event is (time, code, value) in preallocated arrays (4 Mi events),
 * recorded only while {@link #recording}; {@link #dump} writes them as text lines for
 * {@code scripts/round-trace-report}. Any thread may record (one atomic increment per event).
 */
public final class RoundTrace {
    /** Whether tracing was asked for at start-up ({@code vblk.roundTrace}). */
    public static final boolean ON = Boolean.getBoolean("vblk.roundTrace");

    /** I/O thread: a round starts. */
    public static final int ROUND = 1;
    /** I/O thread: the round's first poll reaped {@code value} completions. */
    public static final int REAPED = 2;
    /** I/O thread: those completions are published (after the interrupt, if one was sent). */
    public static final int PUBLISHED = 3;
    /** I/O thread: the round popped {@code value} chains. */
    public static final int POPPED = 4;
    /** I/O thread: a submission of {@code value} operations starts. */
    public static final int SUBMIT_START = 5;
    /** I/O thread: it returned ({@code value}: operations in flight). */
    public static final int SUBMIT_END = 6;
    /** I/O thread: a round publishes early to a guest awaiting its next completion ({@code value}: chains popped so far). */
    public static final int EARLY_PUBLISH = 7;
    /** I/O thread: it blocks in the kernel ({@code value}: operations in flight). */
    public static final int SLEEP_START = 10;
    /** I/O thread: it woke. */
    public static final int SLEEP_END = 11;
    /** I/O thread: the re-check before sleeping found work. */
    public static final int WAKE_NOW = 12;
    /** I/O thread: the answer window found work ({@link Tuning#answerWindowNs()}). */
    public static final int ANSWER = 13;
    /** Guest: woke from its wait for an interrupt. */
    public static final int GUEST_WAKE = 20;
    /** Guest: reaped {@code value} completions (and re-posted their slots). */
    public static final int GUEST_REAPED = 21;
    /** Guest: kicked the device. */
    public static final int GUEST_KICK = 22;
    /** Guest: starts waiting for an interrupt. */
    public static final int GUEST_SLEEP = 23;
    /** Device: an interrupt is sent (before the guest's wake-up call). */
    public static final int INTERRUPT = 24;
    /** Device: the wake-up call returned. */
    public static final int INTERRUPT_END = 25;

    private static final int CAPACITY = 1 << 22;
    private static final long[] TIMES = ON ? new long[CAPACITY] : null;
    private static final int[] CODES = ON ? new int[CAPACITY] : null;
    private static final long[] VALUES = ON ? new long[CAPACITY] : null;
    private static final AtomicInteger NEXT = new AtomicInteger();
    private static volatile boolean recording;

    private RoundTrace() {
    }

    /** Starts or stops recording (only with {@link #ON}); starting discards what was recorded. */
    public static void recording(boolean value) {
        if (ON) {
            if (value) {
                NEXT.set(0);
            }
            recording = value;
        }
    }

    /** Records event {@code code} with {@code value} now, when recording; call only under {@link #ON}. */
    public static void event(int code, long value) {
        if (!recording) {
            return;
        }
        if (NEXT.get() >= CAPACITY) {
            return; // full: counting on would wrap the index negative after 2^31 events (review 10c)
        }
        int i = NEXT.getAndIncrement();
        if (i < CAPACITY) {
            TIMES[i] = System.nanoTime();
            CODES[i] = code;
            VALUES[i] = value;
        }
    }

    /** Writes what was recorded to {@code path}, one "nanoTime code value" line per event. */
    public static void dump(Path path) {
        if (!ON) {
            return;
        }
        int n = Math.min(NEXT.get(), CAPACITY);
        try (PrintWriter w = new PrintWriter(Files.newBufferedWriter(path))) {
            for (int i = 0; i < n; i++) {
                w.print(TIMES[i]);
                w.print(' ');
                w.print(CODES[i]);
                w.print(' ');
                w.println(VALUES[i]);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
