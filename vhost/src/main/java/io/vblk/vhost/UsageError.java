package io.vblk.vhost;

/** A bad command-line argument: reported as one line and exit status 2, never as a stack trace. */
final class UsageError extends RuntimeException {
    private static final long serialVersionUID = 1L;

    UsageError(String message) {
        super(message, null, false, false);
    }
}
