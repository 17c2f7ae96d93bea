package io.vblk.vhost;

import java.io.PrintStream;
import java.time.LocalTime;
import java.time.format.DateTimeFormatter;
import java.util.function.Consumer;

/**
 * One line per event, to stderr by default: connections, queue starts and stops, memory-table
 * changes, refused requests. Never called per I/O request. A test can collect the lines instead.
 */
public final class Log {
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("HH:mm:ss.SSS");

    private final Consumer<String> sink;

    private Log(Consumer<String> sink) {
        this.sink = sink;
    }

    /** A log that prints timestamped lines to {@code out}. */
    public static Log to(PrintStream out) {
        return new Log(line -> {
            out.println(LocalTime.now().format(TIME) + " vblk: " + line);
            out.flush();
        });
    }

    /** A log that hands each line, untimestamped, to {@code sink}. */
    public static Log to(Consumer<String> sink) {
        return new Log(sink);
    }

    /** Logs one line; newlines in it are flattened so that one event stays one line. */
    public void info(String line) {
        sink.accept(line.replace('\n', ' '));
    }
}
