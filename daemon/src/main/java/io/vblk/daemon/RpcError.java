package io.vblk.daemon;

/**
 * A JSON-RPC 2.0 error object: the standard codes, and the daemon's own in the -32000 range
 * the specification reserves for implementation-defined server errors. The message is written
 * for the person reading it.
 */
final class RpcError extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The line is not JSON. */
    static final int PARSE_ERROR = -32700;
    /** JSON, but not a JSON-RPC 2.0 request object. */
    static final int INVALID_REQUEST = -32600;
    static final int METHOD_NOT_FOUND = -32601;
    static final int INVALID_PARAMS = -32602;
    static final int INTERNAL_ERROR = -32603;
    /** No export (or I/O thread) by that id. */
    static final int NOT_FOUND = -32000;
    /** An export by that id, or on that socket, exists already. */
    static final int ALREADY_EXISTS = -32001;
    /** The socket path is in use by another process, or the image is locked by one (QEMU's image locks). */
    static final int IN_USE = -32002;
    /** The request is understood but this build cannot do it. */
    static final int NOT_SUPPORTED = -32003;
    /** The daemon is shutting down and takes no new work. */
    static final int SHUTTING_DOWN = -32004;
    /**
     * The parameters are right, but the image or server could not be opened now (connection
     * refused, permission denied, an I/O error): unlike {@link #INVALID_PARAMS}, trying again
     * later may succeed. On the command line, exit status 1 rather than 2.
     */
    static final int OPEN_FAILED = -32005;
    /** A call that waited for the daemon's start was interrupted (try again). */
    static final int STARTING = -32006;

    final int code;

    RpcError(int code, String message) {
        this(code, message, null);
    }

    /** With the exception it translates, for a caller that tells failures apart (an image lock held in this process). */
    RpcError(int code, String message, Throwable cause) {
        super(message, cause, false, false);
        this.code = code;
    }
}
