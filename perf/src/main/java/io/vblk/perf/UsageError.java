package io.vblk.perf;

/** A bad command line: reported in one line, exit status 2. */
final class UsageError extends RuntimeException {
    private static final long serialVersionUID = 1L;

    UsageError(String message) {
        super(message);
    }
}
