package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;

import io.vblk.vhost.Log;

/**
 * Regression (review 9b): a full table of connections from as many addresses (one host holds a
 * whole IPv6 /64), each having sent its request and reading nothing of its answer. No source
 * held more than one, none was still sending its head, so nothing was evicted and every new
 * connection, the scraper's too, was closed at once until their response deadline. The oldest
 * now goes.
 */
class MetricsManySourcesTest {
    private static final Log QUIET = Log.to(line -> { });
    /** Large enough that an unread answer stays unsent (loopback buffers hold a few MiB). */
    private static final byte[] BODY = new byte[16 << 20];

    static {
        Arrays.fill(BODY, (byte) 'x');
    }

    @Test
    void aScraperIsAnsweredWhileAsManyAddressesHoldEveryConnectionUnread() throws Exception {
        List<Socket> flood = new ArrayList<>();
        try (MetricsHttp s = new MetricsHttp(new InetSocketAddress("127.0.0.1", 0), () -> BODY, QUIET, 30_000, 30_000)) {
            try {
                for (int i = 0; i < MetricsHttp.MAX_CONNECTIONS; i++) {
                    Socket c = new Socket();
                    c.setReceiveBufferSize(4096);
                    c.bind(new InetSocketAddress("127.0.1." + (1 + i), 0)); // one address per connection
                    c.connect(new InetSocketAddress("127.0.0.1", s.port()), 5_000);
                    c.getOutputStream().write("GET /metrics HTTP/1.1\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
                    flood.add(c);
                }
                Thread.sleep(500); // every head read, every answer stuck unsent
                for (int i = 0; i < 5; i++) {
                    assertEquals(BODY.length, scrape(s.port()), "scrape " + i + " during the flood");
                }
                assertTrue(s.connectionCount() <= MetricsHttp.MAX_CONNECTIONS);
            } finally {
                for (Socket c : flood) {
                    c.close();
                }
            }
        }
    }

    @Test
    void anIpv6HostCountsByItsSlash64() throws Exception {
        InetAddress a = InetAddress.getByName("2001:db8:1:2::1");
        InetAddress b = InetAddress.getByName("2001:db8:1:2:ffff:ffff:ffff:ffff");
        InetAddress other = InetAddress.getByName("2001:db8:1:3::1");
        assertEquals(MetricsHttp.sourceOf(a), MetricsHttp.sourceOf(b));
        assertNotEquals(MetricsHttp.sourceOf(a), MetricsHttp.sourceOf(other));
        InetAddress v4 = InetAddress.getByName("192.0.2.7");
        assertEquals(v4, MetricsHttp.sourceOf(v4));
    }

    /** One scrape from 127.0.0.1: the length of the body answered. */
    private static int scrape(int port) throws IOException {
        try (Socket c = new Socket()) {
            c.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
            c.setSoTimeout(20_000);
            c.getOutputStream().write("GET /metrics HTTP/1.1\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
            InputStream in = c.getInputStream();
            byte[] all = in.readAllBytes();
            String text = new String(all, 0, Math.min(all.length, 200), StandardCharsets.ISO_8859_1);
            assertTrue(text.startsWith("HTTP/1.1 200"), "answer: " + text);
            return all.length - MetricsHttp.headEnd(all, 0, all.length);
        }
    }
}
