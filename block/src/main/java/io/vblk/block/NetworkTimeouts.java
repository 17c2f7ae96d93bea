package io.vblk.block;

/**
 * How long a network disk waits for its server: to connect and finish the handshake, for one
 * request's reply before the connection counts as dead, and for a lost server to come back
 * before requests fail with EIO. The defaults (5 s, 30 s, 30 s) suit a server on the same
 * network; a server across a WAN, a storage cluster that fails over in minutes, or a test that
 * holds a handshake on purpose needs others.
 *
 * <p>NBD honours all three; an RBD image honours the retry time (librbd's operation timeouts,
 * in whole seconds) and leaves connecting and single operations to librbd's own settings.
 *
 * <p>RBD rounds the retry time up to whole seconds, at least 1 (librados' operation timeouts
 * are in seconds, and 0 there means none): a retry time of 0 fails NBD requests at once and RBD
 * requests after a second.
 *
 * @param connectMs one connect plus handshake together (NBD), in ms
 * @param requestMs one request's reply (NBD), in ms
 * @param retryMs   a lost server's return before requests fail, in ms (0: NBD fails at once,
 *                  RBD after 1 s)
 */
public record NetworkTimeouts(int connectMs, int requestMs, int retryMs) {
    /** 5 s to connect, 30 s per request, 30 s for a lost server to return. */
    public static final NetworkTimeouts DEFAULTS = new NetworkTimeouts(5_000, 30_000, 30_000);
    /** The longest any of them may be: an hour (a longer wait is a hang to whoever waits). */
    public static final int MAX_MS = 3_600_000;

    /**
     * @throws IllegalArgumentException when a time is out of range (connect and request 1 ms to
     *                                  {@link #MAX_MS}, retry 0 to {@link #MAX_MS})
     */
    public NetworkTimeouts {
        if (connectMs < 1 || connectMs > MAX_MS || requestMs < 1 || requestMs > MAX_MS || retryMs < 0 || retryMs > MAX_MS) {
            throw new IllegalArgumentException("network timeouts out of range: connect " + connectMs + " ms, request "
                    + requestMs + " ms, retry " + retryMs + " ms (connect and request 1.." + MAX_MS + ", retry 0.." + MAX_MS + ")");
        }
    }

    /** These timeouts with the connect time {@code ms}. */
    public NetworkTimeouts withConnectMs(int ms) {
        return new NetworkTimeouts(ms, requestMs, retryMs);
    }

    /** These timeouts with the request time {@code ms}. */
    public NetworkTimeouts withRequestMs(int ms) {
        return new NetworkTimeouts(connectMs, ms, retryMs);
    }

    /** These timeouts with the retry time {@code ms}. */
    public NetworkTimeouts withRetryMs(int ms) {
        return new NetworkTimeouts(connectMs, requestMs, ms);
    }
}
