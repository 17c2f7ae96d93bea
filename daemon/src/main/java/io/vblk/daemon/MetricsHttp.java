package io.vblk.daemon;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import io.vblk.vhost.Log;

/**
 * The metrics endpoint's HTTP server: one thread, one selector, a few hard limits, because the
 * port is TCP, unauthenticated and may face a network. It replaces the Prometheus client's
 * {@code HTTPServer} (the JDK's {@code com.sun.net.httpserver} with ten threads), which a client
 * could stop for good with ten connections that send one byte and nothing more (the JDK reads a
 * request with a blocking read and, by default, no time limit), or with ten that pipeline requests
 * and never read (its blocking write has no limit either), and which accepted any number of
 * connections (each a descriptor of the daemon, which the data plane needs).
 *
 * <p>The rules, each one a bound:
 * <ul>
 * <li>At most {@link #MAX_CONNECTIONS} connections. A new one beyond that evicts a connection of
 * the source address that holds the most (the new one counted with its own source): the oldest of
 * them still waiting for a complete request head (a stalled or hostile client), else the oldest of
 * them being answered (a client that does not read its answer). So a flood from one address
 * competes only with itself, and a scraper from another address, holding one connection, is
 * answered during the flood (irob: before, 32 connections that sent a request and read nothing
 * made every new connection be closed at once for the whole response deadline, and silent ones
 * evicted a scraper before it was heard). When every source holds one connection, the oldest
 * without a complete head is evicted, else the oldest of all (32 addresses that send a request
 * and never read). IPv6 sources count by /64.
 * <li>A request (request line and headers) must arrive whole within {@link #requestDeadlineMs} of
 * the accept and fit in {@link #MAX_REQUEST_BYTES}; otherwise 431 or the connection is closed.
 * <li>One request per connection: the answer says {@code Connection: close}, anything sent after
 * the request (pipelined requests, a body) is read and dropped, never parsed.
 * <li>The answer is written without blocking and must be taken by the client within
 * {@link #responseDeadlineMs}; a client that reads nothing is closed then, holding no thread.
 * <li>GET and HEAD of {@code /metrics} (any query) and {@code /-/healthy}; other paths 404, other
 * methods 405, anything not HTTP/1.x 400.
 * </ul>
 * No allocation grows with a client's input beyond {@link #MAX_REQUEST_BYTES}; the body is built
 * at most once per {@link #MIN_SCRAPE_INTERVAL_NS} and shared by the answers of that interval.
 */
final class MetricsHttp implements AutoCloseable {
    static final int MAX_CONNECTIONS = 32;
    static final int MAX_REQUEST_BYTES = 8 << 10;
    static final long REQUEST_DEADLINE_MS = 10_000;
    static final long RESPONSE_DEADLINE_MS = 10_000;
    /** After the answer is sent: how long to wait for the client to close before closing anyway. */
    private static final long LINGER_MS = 1_000;
    /**
     * A flood of scrapes builds the body at most this often, and answers within it share one
     * body. A body costs more than its bytes: each queue's latency summary reads that queue's
     * histogram under its lock (no longer a copy of about 200 KiB per queue since
     * {@code BlockDevice.latencySummary}), and each body is garbage. Prometheus scrapes every few
     * seconds at most; {@code export.stats} gives fresh figures.
     */
    static final long MIN_SCRAPE_INTERVAL_NS = TimeUnit.SECONDS.toNanos(1);
    private static final long TICK_MS = 100;
    private static final String CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
    private static final byte[] HEALTHY = "Exporter is healthy.\n".getBytes(StandardCharsets.US_ASCII);

    private final ServerSocketChannel listener;
    private final Selector selector;
    private final Supplier<byte[]> metrics;
    private final Log log;
    private final long requestDeadlineMs;
    private final long responseDeadlineMs;
    private final Thread thread;
    private final List<Conn> conns = new ArrayList<>();
    private final ByteBuffer discard = ByteBuffer.allocate(4096);
    private volatile boolean closing;
    private byte[] body;
    private long bodyAt;
    /** Connections served and refused, for tests. */
    private volatile long served;
    private volatile long evicted;

    /**
     * Listens on {@code address} and serves {@code metrics()} (the exposition bytes) at /metrics.
     *
     * @throws UncheckedIOException when it cannot listen
     */
    MetricsHttp(InetSocketAddress address, Supplier<byte[]> metrics, Log log) {
        this(address, metrics, log, REQUEST_DEADLINE_MS, RESPONSE_DEADLINE_MS);
    }

    /** As above with other deadlines (tests). */
    MetricsHttp(InetSocketAddress address, Supplier<byte[]> metrics, Log log, long requestDeadlineMs, long responseDeadlineMs) {
        this.metrics = metrics;
        this.log = log;
        this.requestDeadlineMs = requestDeadlineMs;
        this.responseDeadlineMs = responseDeadlineMs;
        try {
            listener = ServerSocketChannel.open();
            try {
                listener.setOption(StandardSocketOptions.SO_REUSEADDR, true);
                listener.bind(address, 64);
                listener.configureBlocking(false);
                selector = Selector.open();
                listener.register(selector, SelectionKey.OP_ACCEPT);
            } catch (IOException | RuntimeException e) {
                listener.close();
                throw e;
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        thread = new Thread(this::run, "vblk-metrics");
        thread.setDaemon(true);
        thread.start();
    }

    int port() {
        return listener.socket().getLocalPort();
    }

    /** The connections open now (tests; read on another thread, so only a rough figure). */
    synchronized int connectionCount() {
        return conns.size();
    }

    long served() {
        return served;
    }

    long evicted() {
        return evicted;
    }

    private void run() {
        while (!closing) {
            try {
                // Deadlines need a tick only while connections are open: an idle endpoint sleeps.
                selector.select(connectionCount() == 0 ? 0 : TICK_MS);
                if (closing) {
                    break;
                }
                for (SelectionKey k : selector.selectedKeys()) {
                    if (!k.isValid()) {
                        continue;
                    }
                    if (k.channel() == listener) {
                        acceptAll();
                    } else {
                        ((Conn) k.attachment()).ready(k);
                    }
                }
                selector.selectedKeys().clear();
                expire(System.nanoTime());
            } catch (Throwable e) {
                // The loop outlives anything one client causes (an OutOfMemoryError building a
                // body included): the failing connection is closed where it failed, and a
                // failure here only costs this pass.
                if (!closing) {
                    log.info("metrics: " + e);
                    selector.selectedKeys().clear();
                    pause();
                }
            }
        }
        closeAll();
    }

    private static void pause() {
        try {
            Thread.sleep(TICK_MS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void acceptAll() throws IOException {
        while (true) {
            SocketChannel ch;
            try {
                ch = listener.accept();
            } catch (IOException e) {
                log.info("metrics: accept failed: " + e.getMessage()); // out of descriptors: try at the next pass
                pause();
                return;
            }
            if (ch == null) {
                return;
            }
            InetAddress source;
            try {
                source = sourceOf(((InetSocketAddress) ch.getRemoteAddress()).getAddress());
            } catch (IOException | RuntimeException e) {
                ch.close(); // already gone
                continue;
            }
            if (!makeRoom(source)) {
                ch.close();
                continue;
            }
            try {
                ch.configureBlocking(false);
                ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
                Conn c = new Conn(ch, source, System.nanoTime());
                c.key = ch.register(selector, SelectionKey.OP_READ, c);
                synchronized (this) {
                    conns.add(c);
                }
            } catch (IOException | RuntimeException e) {
                ch.close();
            }
        }
    }

    /**
     * The source a connection counts against: its IPv4 address, or the /64 of its IPv6 address
     * (one host commonly holds a whole /64, review 9b).
     */
    static InetAddress sourceOf(InetAddress address) {
        if (address instanceof java.net.Inet6Address) {
            byte[] a = address.getAddress();
            java.util.Arrays.fill(a, 8, 16, (byte) 0);
            try {
                return InetAddress.getByAddress(a);
            } catch (java.net.UnknownHostException e) {
                throw new IllegalStateException(e); // 16 bytes are always an address
            }
        }
        return address;
    }

    /**
     * Whether a new connection from {@code source} may stay, after evicting one connection of
     * the source holding the most (see the class comment). O(connections), at most 32, per
     * accept beyond the limit.
     */
    private boolean makeRoom(InetAddress source) {
        Conn victim;
        synchronized (this) {
            if (conns.size() < MAX_CONNECTIONS) {
                return true;
            }
            Map<InetAddress, Integer> held = new HashMap<>();
            for (Conn c : conns) {
                held.merge(c.source, 1, Integer::sum);
            }
            held.merge(source, 1, Integer::sum); // the newcomer counts with its own source
            InetAddress hog = null;
            int most = 0;
            for (Map.Entry<InetAddress, Integer> e : held.entrySet()) {
                if (e.getValue() > most && (!e.getKey().equals(source) || e.getValue() > 1)) {
                    hog = e.getKey();
                    most = e.getValue();
                }
            }
            victim = most > 1 ? oldestOf(hog) : oldestWithoutHead(null);
            if (victim == null) {
                // Every source holds one connection and every one has sent its request (a flood
                // from as many addresses that does not read its answers, review 9b): the oldest
                // goes. A scraper that reads is answered in milliseconds, long before its
                // connection is the oldest of 32, so only a flood faster than that outruns it.
                victim = oldestOf(null);
            }
        }
        if (victim == null) {
            return false;
        }
        evicted++;
        victim.close();
        return true;
    }

    /**
     * {@code source}'s (or, when null, anyone's) oldest connection without a complete request
     * head, else its oldest. Under this.
     */
    private Conn oldestOf(InetAddress source) {
        Conn waiting = oldestWithoutHead(source);
        if (waiting != null) {
            return waiting;
        }
        Conn oldest = null;
        for (Conn c : conns) {
            if ((source == null || c.source.equals(source)) && (oldest == null || c.since < oldest.since)) {
                oldest = c;
            }
        }
        return oldest;
    }

    /** The oldest connection (of {@code source}, or of any when null) still reading its request head. Under this. */
    private Conn oldestWithoutHead(InetAddress source) {
        Conn oldest = null;
        for (Conn c : conns) {
            if (c.out == null && (source == null || c.source.equals(source))
                    && (oldest == null || c.since < oldest.since)) {
                oldest = c;
            }
        }
        return oldest;
    }

    private void expire(long now) {
        List<Conn> late = new ArrayList<>();
        synchronized (this) {
            for (Conn c : conns) {
                if (now - c.deadline > 0) {
                    late.add(c);
                }
            }
        }
        for (Conn c : late) {
            c.close();
        }
    }

    private void closeAll() {
        List<Conn> all;
        synchronized (this) {
            all = new ArrayList<>(conns);
        }
        for (Conn c : all) {
            c.close();
        }
        try {
            selector.close();
        } catch (IOException e) {
            // nothing more to free
        }
        try {
            listener.close();
        } catch (IOException e) {
            // nothing more to free
        }
    }

    /** The exposition bytes, built at most once per {@link #MIN_SCRAPE_INTERVAL_NS}. */
    private byte[] body(long now) {
        if (body == null || now - bodyAt > MIN_SCRAPE_INTERVAL_NS) {
            body = null; // let the old one go before the new one is built
            body = metrics.get();
            bodyAt = now;
        }
        return body;
    }

    /** One connection: its request bytes, then its answer, then a short wait for the client's close. */
    private final class Conn {
        private final SocketChannel ch;
        /** The client's address: evictions go to the address holding the most connections. */
        private final InetAddress source;
        private final long since;
        private long deadline;
        private SelectionKey key;
        private ByteBuffer in = ByteBuffer.allocate(512);
        /** Where the search for the head's end resumes (a dribbling client costs no rescans). */
        private int scanned;
        /** The answer being written (head then body), or null while the request is read. */
        private ByteBuffer[] out;
        private boolean lingering;
        private boolean closed;

        Conn(SocketChannel ch, InetAddress source, long since) {
            this.ch = ch;
            this.source = source;
            this.since = since;
            this.deadline = since + TimeUnit.MILLISECONDS.toNanos(requestDeadlineMs);
        }

        void ready(SelectionKey k) {
            try {
                if (k.isReadable()) {
                    if (out == null) {
                        readRequest();
                    } else {
                        drainInput();
                    }
                }
                if (!closed && k.isValid() && k.isWritable() && out != null) {
                    writeAnswer();
                }
            } catch (IOException e) {
                close(); // reset by the peer and the like
            } catch (RuntimeException | Error e) {
                log.info("metrics: closing a connection: " + e);
                close();
            }
        }

        private void readRequest() throws IOException {
            if (!in.hasRemaining()) {
                if (in.capacity() >= MAX_REQUEST_BYTES) {
                    answer(431, "Request Header Fields Too Large", null, false);
                    return;
                }
                ByteBuffer bigger = ByteBuffer.allocate(Math.min(MAX_REQUEST_BYTES, in.capacity() * 4));
                in.flip();
                bigger.put(in);
                in = bigger;
            }
            int n = ch.read(in);
            if (n < 0) {
                close();
                return;
            }
            int end = headEnd(in.array(), Math.max(0, scanned - 3), in.position());
            scanned = in.position();
            if (end >= 0) {
                String head = new String(in.array(), 0, end, StandardCharsets.ISO_8859_1);
                in = null; // the request is parsed; later bytes are dropped
                respond(head);
            } else if (!in.hasRemaining() && in.capacity() >= MAX_REQUEST_BYTES) {
                answer(431, "Request Header Fields Too Large", null, false);
            }
        }

        /** Reads and drops whatever the client sends after its request; closes at its end of stream. */
        private void drainInput() throws IOException {
            for (int i = 0; i < 16; i++) { // bounded per pass: a fast sender does not own the loop
                discard.clear();
                int n = ch.read(discard);
                if (n < 0) {
                    if (lingering) {
                        close(); // the answer is out and the client closed: done
                    } else {
                        ch.shutdownInput();
                        key.interestOps(SelectionKey.OP_WRITE);
                    }
                    return;
                }
                if (n == 0) {
                    return;
                }
            }
        }

        private void respond(String head) {
            int lineEnd = head.indexOf('\n');
            String requestLine = (lineEnd < 0 ? head : head.substring(0, lineEnd)).strip();
            String[] parts = requestLine.split(" ", -1);
            if (parts.length != 3 || !parts[2].startsWith("HTTP/1.") || parts[0].isEmpty()) {
                answer(400, "Bad Request", null, false);
                return;
            }
            String method = parts[0];
            boolean head0 = method.equals("HEAD");
            if (!method.equals("GET") && !head0) {
                answer(405, "Method Not Allowed", null, false);
                return;
            }
            String target = parts[1];
            int q = target.indexOf('?');
            String path = q < 0 ? target : target.substring(0, q);
            if (path.equals("/metrics")) {
                byte[] b;
                try {
                    b = body(System.nanoTime());
                } catch (RuntimeException e) {
                    log.info("metrics: scrape failed: " + e);
                    answer(500, "Internal Server Error", null, false);
                    return;
                }
                answer(200, "OK", b, head0);
            } else if (path.equals("/-/healthy")) {
                answer(200, "OK", HEALTHY, head0);
            } else {
                answer(404, "Not Found", null, false);
            }
        }

        private void answer(int status, String reason, byte[] content, boolean headOnly) {
            byte[] b = content == null ? (status + " " + reason + "\n").getBytes(StandardCharsets.US_ASCII) : content;
            String h = "HTTP/1.1 " + status + " " + reason + "\r\n"
                    + "Content-Type: " + (content == null ? "text/plain; charset=utf-8" : CONTENT_TYPE) + "\r\n"
                    + "Content-Length: " + b.length + "\r\n"
                    + (status == 405 ? "Allow: GET, HEAD\r\n" : "")
                    + "Connection: close\r\n\r\n";
            ByteBuffer headBuf = ByteBuffer.wrap(h.getBytes(StandardCharsets.US_ASCII));
            out = headOnly ? new ByteBuffer[] {headBuf} : new ByteBuffer[] {headBuf, ByteBuffer.wrap(b)};
            in = null;
            served++;
            deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(responseDeadlineMs);
            key.interestOps(SelectionKey.OP_READ | SelectionKey.OP_WRITE);
            try {
                writeAnswer();
            } catch (IOException e) {
                close();
            }
        }

        private void writeAnswer() throws IOException {
            if (lingering) {
                return;
            }
            ch.write(out);
            if (out[out.length - 1].hasRemaining()) {
                return; // the rest when the client makes room, or the deadline closes it
            }
            // All sent: half-close and wait briefly for the client's end of stream, so that
            // a client's unread pipelined bytes do not turn the close into a reset that could
            // destroy the answer before it reads it.
            out = new ByteBuffer[0];
            lingering = true;
            ch.shutdownOutput();
            key.interestOps(SelectionKey.OP_READ);
            deadline = Math.min(deadline, System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(LINGER_MS));
        }

        void close() {
            if (closed) {
                return;
            }
            closed = true;
            synchronized (MetricsHttp.this) {
                conns.remove(this);
            }
            if (key != null) {
                key.cancel();
            }
            in = null;
            out = null;
            try {
                ch.close();
            } catch (IOException e) {
                // the descriptor is gone either way
            }
        }
    }

    /**
     * The offset just past the blank line that ends the head ({@code \r\n\r\n} or {@code \n\n})
     * in {@code b[0, length)}, searching from {@code from}, or -1.
     */
    static int headEnd(byte[] b, int from, int length) {
        for (int i = from; i < length; i++) {
            if (b[i] == '\n') {
                if (i + 1 < length && b[i + 1] == '\n') {
                    return i + 2;
                }
                if (i + 2 < length && b[i + 1] == '\r' && b[i + 2] == '\n') {
                    return i + 3;
                }
            }
        }
        return -1;
    }

    /** Stops serving: the listening socket and every connection close. */
    @Override
    public void close() {
        closing = true;
        selector.wakeup();
        try {
            thread.join(TimeUnit.SECONDS.toMillis(5));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
