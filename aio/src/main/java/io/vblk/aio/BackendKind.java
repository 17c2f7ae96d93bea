package io.vblk.aio;

import java.util.Locale;

/** The I/O back ends, with the names used on command lines and in configuration. */
public enum BackendKind {
    /** Linux native AIO (io_submit), completions to an eventfd. Linux only. */
    LINUX_AIO("linux-aio"),
    /** io_uring with a registered eventfd. Linux 5.1 or later. */
    IO_URING("io_uring"),
    /** Positional {@link java.nio.channels.FileChannel} I/O on a small thread pool. Any OS. */
    THREADS("threads"),
    /** Completes every operation at once without touching the image: measures the rest. */
    NULL("null");

    private final String cliName;

    BackendKind(String cliName) {
        this.cliName = cliName;
    }

    /** The configuration name: {@code linux-aio}, {@code io_uring}, {@code threads} or {@code null}. */
    public String cliName() {
        return cliName;
    }

    /**
     * Parses a configuration name; case and {@code -}/{@code _} are not significant, so
     * {@code io-uring} and {@code LINUX_AIO} are accepted too.
     *
     * @throws IllegalArgumentException naming the valid choices
     */
    public static BackendKind parse(String name) {
        if (name != null) {
            String wanted = normalize(name);
            for (BackendKind kind : values()) {
                if (normalize(kind.cliName).equals(wanted)) {
                    return kind;
                }
            }
        }
        throw new IllegalArgumentException("unknown I/O back end '" + name
                + "': expected linux-aio, io_uring, threads or null");
    }

    private static String normalize(String name) {
        return name.trim().toLowerCase(Locale.ROOT).replace('_', '-');
    }

    @Override
    public String toString() {
        return cliName;
    }
}
