package io.vblk.vhost;

/**
 * A frontend broke the protocol. {@link #fatal()} errors leave the stream unusable (bad framing,
 * an unreadable size) and end the connection; the others reject one well-framed request, which is
 * answered with an error where the protocol has a way to say so, and otherwise also ends the
 * connection, because a frontend that is not told would carry on with a device that is not set up
 * as it believes.
 */
final class ProtocolError extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final boolean fatal;

    private ProtocolError(String message, boolean fatal) {
        // No stack trace: the message is the whole story, and it goes to a one-line log.
        super(message, null, false, false);
        this.fatal = fatal;
    }

    /** The request is refused; the connection may go on if the frontend can be told. */
    static ProtocolError rejected(String message) {
        return new ProtocolError(message, false);
    }

    /** The stream cannot be trusted any more: the connection ends. */
    static ProtocolError fatal(String message) {
        return new ProtocolError(message, true);
    }

    /** Whether the connection must end. */
    boolean fatal() {
        return fatal;
    }
}
