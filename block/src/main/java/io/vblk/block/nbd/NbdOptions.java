package io.vblk.block.nbd;

/**
 * How an NBD disk is driven: request slots, connections, and how long a dead or silent server
 * is waited for before requests fail with an I/O error. Immutable; {@code with*} copies.
 */
public final class NbdOptions {
    private final int depth;
    private final int maxSegments;
    private final int connections;
    private final int retryTimeoutMs;
    private final int requestTimeoutMs;
    private final int connectTimeoutMs;
    private final boolean readOnly;
    private final NbdTls tls;
    private final boolean strictFlush;

    /**
     * The system property that turns {@link #withStrictFlush strict flushes} on for every NBD
     * disk opened with {@link #defaults()}: the process-wide default ({@code vblk serve} and
     * {@code vblk daemon}: pass {@code -Dvblk.nbd.strictFlush=true} through {@code VBLK_JAVA_OPTS}
     * or the java command); an export's {@code nbd_strict_flush} ({@code --nbd-strict-flush})
     * overrides it for its disk.
     */
    public static final String STRICT_FLUSH_PROPERTY = "vblk.nbd.strictFlush";

    private NbdOptions(int depth, int maxSegments, int connections, int retryTimeoutMs, int requestTimeoutMs,
            int connectTimeoutMs, boolean readOnly, NbdTls tls, boolean strictFlush) {
        if (depth < 1 || depth > 4096 || maxSegments < 1 || maxSegments > 1023 || connections < 1 || connections > 16
                || retryTimeoutMs < 0 || requestTimeoutMs < 1 || connectTimeoutMs < 1) {
            throw new IllegalArgumentException("bad NBD options: depth " + depth + ", segments " + maxSegments
                    + ", connections " + connections + ", retry " + retryTimeoutMs + " ms, request timeout "
                    + requestTimeoutMs + " ms, connect timeout " + connectTimeoutMs + " ms");
        }
        this.depth = depth;
        this.maxSegments = maxSegments;
        this.connections = connections;
        this.retryTimeoutMs = retryTimeoutMs;
        this.requestTimeoutMs = requestTimeoutMs;
        this.connectTimeoutMs = connectTimeoutMs;
        this.readOnly = readOnly;
        this.tls = tls;
        this.strictFlush = strictFlush;
    }

    /**
     * Depth 128, 256 segments per request (above QEMU's seg_max of 254), one connection, 30 s
     * retry and request timeouts, 5 s connect timeout; strict flushes when the system property
     * {@value #STRICT_FLUSH_PROPERTY} is true.
     */
    public static NbdOptions defaults() {
        return new NbdOptions(128, 256, 1, 30_000, 30_000, 5_000, false, null, Boolean.getBoolean(STRICT_FLUSH_PROPERTY));
    }

    /** Requests in flight at once. */
    public NbdOptions withDepth(int value) {
        return new NbdOptions(value, maxSegments, connections, retryTimeoutMs, requestTimeoutMs, connectTimeoutMs, readOnly, tls, strictFlush);
    }

    /** Buffers per request. */
    public NbdOptions withMaxSegments(int value) {
        return new NbdOptions(depth, value, connections, retryTimeoutMs, requestTimeoutMs, connectTimeoutMs, readOnly, tls, strictFlush);
    }

    /** Connections to open when the server advertises CAN_MULTI_CONN (one otherwise). */
    public NbdOptions withConnections(int value) {
        return new NbdOptions(depth, maxSegments, value, retryTimeoutMs, requestTimeoutMs, connectTimeoutMs, readOnly, tls, strictFlush);
    }

    /** How long requests wait for a lost server to come back before they fail with EIO. */
    public NbdOptions withRetryTimeoutMs(int value) {
        return new NbdOptions(depth, maxSegments, connections, value, requestTimeoutMs, connectTimeoutMs, readOnly, tls, strictFlush);
    }

    /** How long a request waits for its reply before the connection is deemed dead. */
    public NbdOptions withRequestTimeoutMs(int value) {
        return new NbdOptions(depth, maxSegments, connections, retryTimeoutMs, value, connectTimeoutMs, readOnly, tls, strictFlush);
    }

    /** How long one connect plus handshake may take. */
    public NbdOptions withConnectTimeoutMs(int value) {
        return new NbdOptions(depth, maxSegments, connections, retryTimeoutMs, requestTimeoutMs, value, readOnly, tls, strictFlush);
    }

    /** Refuses changes with {@code -EROFS} even when the export allows them. */
    public NbdOptions withReadOnly(boolean value) {
        return new NbdOptions(depth, maxSegments, connections, retryTimeoutMs, requestTimeoutMs, connectTimeoutMs, value, tls, strictFlush);
    }

    /**
     * TLS credentials and policy for an {@code nbds://} or {@code nbds+unix://} address (they
     * take the place of the URI's {@code tls-certificates}); ignored for a plain address.
     */
    public NbdOptions withTls(NbdTls value) {
        return new NbdOptions(depth, maxSegments, connections, retryTimeoutMs, requestTimeoutMs, connectTimeoutMs, readOnly, value, strictFlush);
    }

    /**
     * Whether a FLUSH fails for good (EIO, until the disk is reopened) once a connection was lost
     * while the server had acknowledged writes that no completed FLUSH covered. For servers whose
     * write cache dies with their process (nbdkit's cache filter, a user-space storage server
     * with its own cache): the FLUSH sent to the server that comes back covers only what that one
     * holds, so without this a guest would be told writes the dead server lost are durable. Off
     * by default, as QEMU's NBD client: a server whose acknowledged writes are in the host's page
     * cache or on disk (qemu-nbd, nbdkit's file plugin) loses nothing when its process restarts,
     * and with this on every such restart during writes would fail the guest's flushes (a Linux
     * guest then remounts its file system read-only). Either way the loss is logged.
     */
    public NbdOptions withStrictFlush(boolean value) {
        return new NbdOptions(depth, maxSegments, connections, retryTimeoutMs, requestTimeoutMs, connectTimeoutMs, readOnly, tls, value);
    }

    /** See {@link #withStrictFlush}. */
    public boolean strictFlush() {
        return strictFlush;
    }

    /** The TLS credentials given with {@link #withTls}, or null. */
    public NbdTls tls() {
        return tls;
    }

    public boolean readOnly() {
        return readOnly;
    }

    public int depth() {
        return depth;
    }

    public int maxSegments() {
        return maxSegments;
    }

    public int connections() {
        return connections;
    }

    public int retryTimeoutMs() {
        return retryTimeoutMs;
    }

    public int requestTimeoutMs() {
        return requestTimeoutMs;
    }

    public int connectTimeoutMs() {
        return connectTimeoutMs;
    }
}
