package io.vblk.daemon;

/**
 * A parameter a person got wrong (a missing socket, a queue count out of range, a string where a
 * number belongs). On the command line it is one line on stderr and exit status 2; over JSON-RPC
 * it is error -32602 with the same message. Stackless: it is an answer, not a bug.
 */
final class InvalidParams extends RuntimeException {
    private static final long serialVersionUID = 1L;

    InvalidParams(String message) {
        super(message, null, false, false);
    }

    /** With the exception it translates, for a caller that tells refusals apart (an image lock held in this process). */
    InvalidParams(String message, Throwable cause) {
        super(message, cause, false, false);
    }
}
