package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

import io.vblk.vhost.Log;

/**
 * {@link MetricsHttp}'s deadlines, with short ones so that the test is quick: a client that never
 * finishes its request, and one that never reads a large answer, each lose their connection at
 * their deadline and hold nothing after it.
 */
class MetricsHttpTest {
    private static final Log QUIET = Log.to(line -> { });

    private static MetricsHttp server(byte[] body, AtomicInteger builds) {
        return new MetricsHttp(new InetSocketAddress("127.0.0.1", 0), () -> {
            builds.incrementAndGet();
            return body;
        }, QUIET, 300, 300);
    }

    private static void awaitNoConnections(MetricsHttp s) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30); // a hang guard
        while (s.connectionCount() > 0 && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertEquals(0, s.connectionCount());
    }

    @Test
    void aRequestThatNeverEndsIsClosedAtItsDeadline() throws Exception {
        try (MetricsHttp s = server("x\n".getBytes(StandardCharsets.US_ASCII), new AtomicInteger());
                Socket c = new Socket()) {
            c.connect(new InetSocketAddress("127.0.0.1", s.port()));
            c.getOutputStream().write("GET /metr".getBytes(StandardCharsets.US_ASCII));
            c.setSoTimeout(10_000);
            assertEquals(-1, c.getInputStream().read(), "closed without an answer");
            awaitNoConnections(s);
        }
    }

    @Test
    void anAnswerNobodyReadsIsDroppedAtItsDeadline() throws Exception {
        byte[] big = new byte[32 << 20]; // far more than both socket buffers hold
        try (MetricsHttp s = server(big, new AtomicInteger()); Socket c = new Socket()) {
            c.setReceiveBufferSize(4096);
            c.connect(new InetSocketAddress("127.0.0.1", s.port()));
            c.getOutputStream().write("GET /metrics HTTP/1.1\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
            // The server has the connection first (a CI run looked before the server had accepted
            // it, saw no connection, and read the whole answer as it was sent), then drops it.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30); // a hang guard
            while (s.served() == 0 && s.connectionCount() == 0 && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            awaitNoConnections(s);
            // What the client reads now ends early: the server gave up on it.
            long got = 0;
            c.setSoTimeout(5_000);
            InputStream in = c.getInputStream();
            byte[] b = new byte[1 << 16];
            try {
                for (int n; (n = in.read(b)) > 0;) {
                    got += n;
                }
            } catch (SocketTimeoutException | java.net.SocketException e) {
                // a reset ends it too
            }
            assertTrue(got < big.length, "read " + got);
            assertEquals(1, s.served());
        }
    }

    @Test
    void aFloodOfScrapesBuildsTheBodyAtMostOncePerInterval() throws Exception {
        AtomicInteger builds = new AtomicInteger();
        try (MetricsHttp s = server("x\n".getBytes(StandardCharsets.US_ASCII), builds)) {
            long start = System.nanoTime();
            int scrapes = 0;
            while (scrapes < 50) {
                try (Socket c = new Socket()) {
                    c.connect(new InetSocketAddress("127.0.0.1", s.port()));
                    c.getOutputStream().write("GET /metrics HTTP/1.1\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
                    c.setSoTimeout(5_000);
                    assertTrue(new String(c.getInputStream().readAllBytes(), StandardCharsets.US_ASCII).startsWith("HTTP/1.1 200"));
                }
                scrapes++;
            }
            long intervals = (System.nanoTime() - start) / MetricsHttp.MIN_SCRAPE_INTERVAL_NS + 1;
            assertTrue(builds.get() <= intervals, builds + " builds in " + intervals + " intervals");
        }
    }

    @Test
    void headEndFindsTheBlankLineFromWhereTheLastSearchStopped() {
        byte[] b = "GET / HTTP/1.1\r\nA: b\r\n\r\nrest".getBytes(StandardCharsets.US_ASCII);
        assertEquals(24, MetricsHttp.headEnd(b, 0, b.length));
        assertEquals(24, MetricsHttp.headEnd(b, 20, b.length));
        assertEquals(-1, MetricsHttp.headEnd(b, 0, 23));
        assertEquals(3, MetricsHttp.headEnd("a\n\nb".getBytes(StandardCharsets.US_ASCII), 0, 4));
    }
}
