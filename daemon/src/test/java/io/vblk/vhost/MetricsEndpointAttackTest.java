package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The metrics endpoint ({@code --metrics}) under hostile HTTP clients: it is TCP and
 * unauthenticated, so whoever reaches the port may stall, flood or confuse it. None of that may
 * stop a proper scrape for long, hold the daemon's descriptors or threads, or reach the data or
 * control plane. Each scrape here is a fresh connection with a timeout, so a server that stalls
 * fails the test instead of hanging it.
 *
 * <p>Before {@link io.vblk.daemon.MetricsHttp} (the Prometheus client's HTTPServer, i.e. the JDK's
 * {@code com.sun.net.httpserver} with ten threads, no request or response time limit and no
 * connection limit) {@link #slowlorisClientsDoNotStopAScrape}, {@link #clientsThatNeverReadDoNotStopAScrape},
 * {@link #idleConnectionsAreBoundedAndAScrapeStillGetsIn}, {@link #onlyGetAndHeadOfKnownPathsAreServed}
 * and {@link #pipelinedRequestsGetOneAnswer} failed.
 */
class MetricsEndpointAttackTest {
    private static final int SCRAPE_TIMEOUT_MS = 5_000;

    @TempDir
    Path dir;

    /** A daemon with export "a" and metrics on a free local port; the port. */
    private int start(DaemonRig d) throws IOException {
        d.result("export.add", DaemonRig.json(Map.of("id", "a", "image", DaemonRig.image(dir, "a.img").toString(),
                "socket", dir.resolve("a.sock").toString())));
        Matcher m = Pattern.compile("metrics on http://127\\.0\\.0\\.1:(\\d+)/metrics").matcher(d.stdout());
        assertTrue(m.find(), d.stdout());
        return Integer.parseInt(m.group(1));
    }

    private DaemonRig daemon() throws InterruptedException {
        return new DaemonRig(dir.resolve("control.sock"), "--metrics", "127.0.0.1:0");
    }

    /** Sends {@code request} on a fresh connection and returns all the server sends until it closes (or the timeout). */
    static String exchange(int port, String request) throws IOException {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), SCRAPE_TIMEOUT_MS);
            s.setSoTimeout(SCRAPE_TIMEOUT_MS);
            s.getOutputStream().write(request.getBytes(StandardCharsets.ISO_8859_1));
            s.getOutputStream().flush();
            return readToEnd(s.getInputStream());
        }
    }

    private static String readToEnd(InputStream in) throws IOException {
        ByteArrayOutputStream got = new ByteArrayOutputStream();
        byte[] b = new byte[8192];
        try {
            for (int n; (n = in.read(b)) > 0;) {
                got.write(b, 0, n);
            }
        } catch (SocketTimeoutException e) {
            return got.toString(StandardCharsets.ISO_8859_1) + "\n<timed out>";
        }
        return got.toString(StandardCharsets.ISO_8859_1);
    }

    /** A proper scrape must answer 200 with export a's metrics, within the timeout. */
    static void assertScrapes(int port) throws IOException {
        String r = exchange(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        assertTrue(r.startsWith("HTTP/1.1 200"), "a proper scrape: " + abbreviate(r));
        assertTrue(r.contains("vblk_disk_size_bytes{export=\"a\"}"), abbreviate(r));
    }

    private static String abbreviate(String s) {
        return s.length() > 400 ? s.substring(0, 400) + "..." : s;
    }

    private static Socket connect(int port) throws IOException {
        Socket s = new Socket();
        s.connect(new InetSocketAddress("127.0.0.1", port), SCRAPE_TIMEOUT_MS);
        return s;
    }

    private static void closeAll(List<Socket> sockets) {
        for (Socket s : sockets) {
            try {
                s.close();
            } catch (IOException e) {
                // closing anyway
            }
        }
    }

    @Test
    void slowlorisClientsDoNotStopAScrape() throws Exception {
        List<Socket> stalled = new ArrayList<>();
        try (DaemonRig d = daemon()) {
            int port = start(d);
            assertScrapes(port);
            for (int i = 0; i < 40; i++) {
                Socket s = connect(port);
                stalled.add(s);
                // Half a request, then nothing: one byte for some, most of a head for others.
                s.getOutputStream().write((i % 2 == 0 ? "G" : "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        .getBytes(StandardCharsets.US_ASCII));
                s.getOutputStream().flush();
            }
            Thread.sleep(200);
            assertScrapes(port);
            // The control plane never noticed.
            assertEquals(1, ((List<?>) d.result("export.list", null)).size());
        } finally {
            closeAll(stalled);
        }
    }

    @Test
    void clientsThatNeverReadDoNotStopAScrape() throws Exception {
        List<Socket> deaf = new ArrayList<>();
        ExecutorService writers = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "deaf-writer");
            t.setDaemon(true);
            return t;
        });
        AtomicBoolean stop = new AtomicBoolean();
        try (DaemonRig d = daemon()) {
            int port = start(d);
            byte[] request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".getBytes(StandardCharsets.US_ASCII);
            for (int i = 0; i < 20; i++) {
                Socket s = new Socket();
                s.setReceiveBufferSize(4096);
                s.connect(new InetSocketAddress("127.0.0.1", port), SCRAPE_TIMEOUT_MS);
                deaf.add(s);
                OutputStream out = s.getOutputStream();
                // Pipelined requests for as long as the server takes them, never reading an answer.
                writers.submit(() -> {
                    try {
                        for (int k = 0; k < 4000 && !stop.get(); k++) {
                            out.write(request);
                        }
                    } catch (IOException e) {
                        // the server closed it: what a bounded server does
                    }
                    return null;
                });
            }
            Thread.sleep(1000);
            assertScrapes(port);
        } finally {
            stop.set(true);
            closeAll(deaf);
            writers.shutdownNow();
        }
    }

    @Test
    void idleConnectionsAreBoundedAndAScrapeStillGetsIn() throws Exception {
        List<Socket> idle = new ArrayList<>();
        try (DaemonRig d = daemon()) {
            int port = start(d);
            int before = openDescriptors();
            for (int i = 0; i < 200; i++) {
                idle.add(connect(port));
            }
            assertScrapes(port);
            // The server keeps at most a few dozen of them: the rest see their end of stream soon
            // (waited for up to 30 s, a hang guard: an unbounded server never closes them).
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            int closed;
            do {
                closed = 0;
                for (Socket s : idle) {
                    if (closedByServer(s)) {
                        closed++;
                    }
                }
            } while (closed < 200 - 64 && System.nanoTime() < deadline);
            assertTrue(closed >= 200 - 64, "only " + closed + " of 200 idle connections were closed by the server");
            // Both ends live in this JVM: 200 client descriptors, and at most 64 of the server's.
            int grown = openDescriptors() - before;
            assertTrue(grown <= 200 + 64, "descriptors grew by " + grown);
        } finally {
            closeAll(idle);
        }
    }

    /** Whether the server ended {@code s} (end of stream or reset), looking for at most 1 ms. */
    private static boolean closedByServer(Socket s) throws IOException {
        if (s.isClosed()) {
            return true;
        }
        s.setSoTimeout(1);
        try {
            if (s.getInputStream().read() < 0) {
                s.close();
                return true;
            }
            return false;
        } catch (SocketTimeoutException e) {
            return false;
        } catch (IOException e) {
            s.close();
            return true;
        }
    }

    private static int openDescriptors() throws IOException {
        try (var fds = Files.list(Path.of("/proc/self/fd"))) {
            return (int) fds.count();
        }
    }

    @Test
    void aHugeRequestHeadIsRefusedAtItsBound() throws Exception {
        try (DaemonRig d = daemon()) {
            int port = start(d);
            try (Socket s = connect(port)) {
                s.setSoTimeout(SCRAPE_TIMEOUT_MS);
                OutputStream out = s.getOutputStream();
                out.write("GET /metrics HTTP/1.1\r\nX-Huge: ".getBytes(StandardCharsets.US_ASCII));
                byte[] a = new byte[64 << 10];
                java.util.Arrays.fill(a, (byte) 'a');
                try {
                    for (int i = 0; i < 16; i++) { // 1 MiB of one header, never ended
                        out.write(a);
                    }
                } catch (IOException e) {
                    // closed for it: fine, the answer may still be readable
                }
                String r = readToEnd(s.getInputStream());
                assertTrue(r.isEmpty() || r.startsWith("HTTP/1.1 431"), abbreviate(r));
            } catch (IOException reset) {
                // a reset instead of the 431: the connection ended either way
            }
            assertScrapes(port);
        }
    }

    @Test
    void onlyGetAndHeadOfKnownPathsAreServed() throws Exception {
        try (DaemonRig d = daemon()) {
            int port = start(d);
            for (String method : List.of("POST", "PUT", "DELETE", "TRACE", "OPTIONS", "PATCH")) {
                String r = exchange(port, method + " /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
                assertTrue(r.startsWith("HTTP/1.1 405"), method + ": " + abbreviate(r));
                assertFalse(r.contains("vblk_disk"), method + " must not get the metrics: " + abbreviate(r));
            }
            for (String path : List.of("/metrics/../etc/passwd", "//metrics", "/metricsx", "/Metrics", "/metrics%2f",
                    "http://127.0.0.1/metrics", "/../metrics", "*")) {
                String r = exchange(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
                assertTrue(r.startsWith("HTTP/1.1 404"), path + ": " + abbreviate(r));
            }
            for (String bad : List.of("GET /metrics\r\n\r\n", "GET /metrics HTTP/2.0\r\n\r\n", "\r\n\r\n",
                    "GET  /metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1 x\r\n\r\n", "\u0000\u0001\u0002\r\n\r\n")) {
                String r = exchange(port, bad);
                assertTrue(r.startsWith("HTTP/1.1 400"), bad.strip() + ": " + abbreviate(r));
            }
            String head = exchange(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            assertTrue(head.startsWith("HTTP/1.1 200"), head);
            assertTrue(head.endsWith("\r\n\r\n"), "HEAD has no body: " + abbreviate(head));
            assertTrue(exchange(port, "GET /-/healthy HTTP/1.0\r\n\r\n").startsWith("HTTP/1.1 200"));
            String query = exchange(port, "GET /metrics?name[]=vblk_disk_size_bytes HTTP/1.1\r\n\r\n");
            assertTrue(query.startsWith("HTTP/1.1 200") && query.contains("vblk_disk"), abbreviate(query));
            assertScrapes(port);
        }
    }

    @Test
    void pipelinedRequestsGetOneAnswer() throws Exception {
        try (DaemonRig d = daemon()) {
            int port = start(d);
            String one = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
            String r = exchange(port, one + one + "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" + one);
            assertTrue(r.startsWith("HTTP/1.1 200"), abbreviate(r));
            assertEquals(1, r.split("HTTP/1\\.1 ", -1).length - 1, "one answer, then the close: " + abbreviate(r));
            assertFalse(r.endsWith("<timed out>"), "the server closes after its answer");
        }
    }

    @Test
    void connectionsThatCloseAtOnceLeaveNothingBehind() throws Exception {
        try (DaemonRig d = daemon()) {
            int port = start(d);
            assertScrapes(port);
            int before = openDescriptors();
            for (int i = 0; i < 300; i++) {
                try (Socket s = connect(port)) {
                    if (i % 3 == 0) {
                        s.setSoLinger(true, 0); // a reset instead of a close
                    } else if (i % 3 == 1) {
                        s.getOutputStream().write("GET /metrics HTTP/1.1\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
                    }
                }
            }
            assertScrapes(port);
            // Up to 30 s for the server to have closed its ends (the JVM's count: a loaded machine
            // may be slow to get there); a leak per connection never comes back.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (openDescriptors() > before + 2 && System.nanoTime() < deadline) {
                Thread.sleep(50);
            }
            assertTrue(openDescriptors() <= before + 2, "descriptors " + before + " -> " + openDescriptors());
        }
    }

    @Test
    void scrapesDuringExportChurnAllSucceed() throws Exception {
        try (DaemonRig d = daemon()) {
            int port = start(d);
            ExecutorService scraper = Executors.newSingleThreadExecutor();
            AtomicBoolean stop = new AtomicBoolean();
            try {
                Future<Integer> scrapes = scraper.submit(() -> {
                    int n = 0;
                    while (!stop.get()) {
                        assertScrapes(port);
                        n++;
                    }
                    return n;
                });
                for (int i = 0; i < 15; i++) {
                    d.result("export.add", DaemonRig.json(Map.of("id", "c", "image", DaemonRig.image(dir, "c.img").toString(),
                            "socket", dir.resolve("c.sock").toString(), "queues", 1 + i % 4)));
                    d.result("export.remove", "{\"id\":\"c\"}");
                }
                stop.set(true);
                assertTrue(scrapes.get(30, TimeUnit.SECONDS) > 0);
            } finally {
                stop.set(true);
                scraper.shutdownNow();
            }
        }
    }
}
