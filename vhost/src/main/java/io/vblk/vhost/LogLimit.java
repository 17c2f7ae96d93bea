package io.vblk.vhost;

import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;

/**
 * A rate limit for the lines a frontend can cause at will: connects, disconnects, early exits,
 * refused connections, refused requests. A frontend in a reconnect loop (or a script connecting and closing) would
 * otherwise write thousands of lines a second (rev15c: 10,000 in 5.4 s). Each server has one:
 * the first {@link #LINES} lines of a window of {@link #WINDOW_NS} are logged, the rest counted,
 * and the count is logged in one line ("N similar lines suppressed") by the first limited line
 * of its kind after the window ended, or by {@link #flush()} (the server's stop). No thread, no allocation
 * beyond the lines themselves.
 */
final class LogLimit {
    /** Lines logged per window and kind. */
    static final int LINES = 10;
    /** The window: one minute. */
    static final long WINDOW_NS = TimeUnit.MINUTES.toNanos(1);

    /**
     * What a line tells, each kind with a budget of its own, so that a loop of one kind (bare
     * connects, or connections from a refused uid) cannot hide another: the reason the next
     * frontend was thrown out stays in the log after a connect loop (rev15d).
     */
    enum Kind {
        /** Connected, disconnected, waits for the frontend before it. */
        CONNECTION("frontend connects and disconnects"),
        /** A connection the server closed, with its reason (a protocol error). */
        CLOSED("connections closed for a protocol error"),
        /** A peer refused (not an allowed uid, too many waiting). */
        REFUSED("refused connections"),
        /**
         * A request of a served frontend refused and answered (GET_CONFIG outside the config
         * space, GET_INFLIGHT_FD, a need_reply failure): the frontend can repeat it at will.
         */
        REQUEST_REFUSED("refused requests");

        final String what;

        Kind(String what) {
            this.what = what;
        }
    }

    private static final Kind[] KINDS = Kind.values();

    private final Log log;
    private final LongSupplier clock;
    private final int lines;
    private final long windowNs;
    private final long[] windowStart = new long[KINDS.length];
    private final boolean[] started = new boolean[KINDS.length];
    private final int[] logged = new int[KINDS.length];
    private final long[] suppressed = new long[KINDS.length];

    LogLimit(Log log) {
        this(log, System::nanoTime, LINES, WINDOW_NS);
    }

    /** A limit of {@code lines} per {@code windowNs} and kind, measured by {@code clock} (tests). */
    LogLimit(Log log, LongSupplier clock, int lines, long windowNs) {
        this.log = log;
        this.clock = clock;
        this.lines = lines;
        this.windowNs = windowNs;
    }

    /** {@link #info(Kind, String)} of a {@link Kind#CONNECTION} line. */
    void info(String line) {
        info(Kind.CONNECTION, line);
    }

    /** Logs {@code line} if the window of its kind has room, else counts it. Any thread. */
    synchronized void info(Kind kind, String line) {
        int k = kind.ordinal();
        long now = clock.getAsLong();
        if (!started[k] || now - windowStart[k] >= windowNs) {
            logSuppressed(k);
            started[k] = true;
            windowStart[k] = now;
            logged[k] = 0;
        }
        if (logged[k] < lines) {
            logged[k]++;
            log.info(line);
        } else {
            suppressed[k]++;
        }
    }

    /** Logs how many lines were suppressed so far, if any (the server stops: no later line would). */
    synchronized void flush() {
        for (int k = 0; k < KINDS.length; k++) {
            logSuppressed(k);
        }
    }

    private void logSuppressed(int k) {
        if (suppressed[k] > 0) {
            log.info(suppressed[k] + " similar lines suppressed (" + KINDS[k].what + ": at most " + lines
                    + " lines a minute are logged)");
            suppressed[k] = 0;
        }
    }
}
