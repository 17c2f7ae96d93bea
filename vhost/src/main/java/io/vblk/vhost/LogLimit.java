package io.vblk.vhost;

import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;

/**
 * A rate limit for the lines a frontend can cause at will: connects, disconnects, early exits,
 * refused connections. A frontend in a reconnect loop (or a script connecting and closing) would
 * otherwise write thousands of lines a second (rev15c: 10,000 in 5.4 s). Each server has one:
 * the first {@link #LINES} lines of a window of {@link #WINDOW_NS} are logged, the rest counted,
 * and the count is logged in one line ("N similar lines suppressed") by the first limited line
 * after the window ended, or by {@link #flush()} (the server's stop). No thread, no allocation
 * beyond the lines themselves.
 */
final class LogLimit {
    /** Lines logged per window. */
    static final int LINES = 10;
    /** The window: one minute. */
    static final long WINDOW_NS = TimeUnit.MINUTES.toNanos(1);

    private final Log log;
    private final LongSupplier clock;
    private final int lines;
    private final long windowNs;
    private long windowStart;
    private boolean started;
    private int logged;
    private long suppressed;

    LogLimit(Log log) {
        this(log, System::nanoTime, LINES, WINDOW_NS);
    }

    /** A limit of {@code lines} per {@code windowNs} measured by {@code clock} (tests). */
    LogLimit(Log log, LongSupplier clock, int lines, long windowNs) {
        this.log = log;
        this.clock = clock;
        this.lines = lines;
        this.windowNs = windowNs;
    }

    /** Logs {@code line} if the window has room, else counts it. Any thread. */
    synchronized void info(String line) {
        long now = clock.getAsLong();
        if (!started || now - windowStart >= windowNs) {
            logSuppressed();
            started = true;
            windowStart = now;
            logged = 0;
        }
        if (logged < lines) {
            logged++;
            log.info(line);
        } else {
            suppressed++;
        }
    }

    /** Logs how many lines were suppressed so far, if any (the server stops: no later line would). */
    synchronized void flush() {
        logSuppressed();
    }

    private void logSuppressed() {
        if (suppressed > 0) {
            log.info(suppressed + " similar lines suppressed (frontend connects, disconnects and refusals: at most " + lines
                    + " lines a minute are logged)");
            suppressed = 0;
        }
    }
}
