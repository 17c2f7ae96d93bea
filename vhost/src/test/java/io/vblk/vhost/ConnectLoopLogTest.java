package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.engine.BlkConfig;
import io.vblk.testkit.VhostUserFrontend;

/**
 * rev15c: a frontend in a reconnect loop (connect and close at once, or send a bad header and
 * go) wrote 10,000 lines in 5.4 s. The lines a frontend can repeat at will are limited per
 * server (10 a minute), and what was left out is counted in one line.
 */
class ConnectLoopLogTest {
    private static final int LOOPS = 200;

    @TempDir
    Path dir;

    @Test
    void aConnectLoopIsLoggedInAFewLinesAndCounted() throws Exception {
        List<String> all = serve("loop", sock -> {
            for (int i = 0; i < LOOPS; i++) {
                try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    ch.connect(UnixDomainSocketAddress.of(sock));
                    if (i % 2 == 1) {
                        ch.write(unknownRequest());
                    }
                }
            }
        });
        long limited = all.stream().filter(l -> l.startsWith("frontend ") && (l.contains(" connected") || l.contains(" disconnected")
                || l.contains(": connection closed")) || l.startsWith("a frontend")).count();
        AtomicLong suppressed = new AtomicLong();
        Pattern p = Pattern.compile("^(\\d+) similar lines suppressed");
        for (String l : all) {
            Matcher m = p.matcher(l);
            if (m.find()) {
                suppressed.addAndGet(Long.parseLong(m.group(1)));
            }
        }
        // 10 lines per minute and kind (connects and disconnects; closes for a protocol error):
        // twice that if the loop spanned the end of a window on a slow machine.
        String some = all.size() + " lines, the first " + all.subList(0, Math.min(30, all.size()));
        assertTrue(limited <= 2 * 2 * LogLimit.LINES, limited + " limited lines logged; " + some);
        // Each of the LOOPS + 1 connections has a connect and an end line (waiting ones one more).
        assertTrue(limited + suppressed.get() >= 2 * (LOOPS + 1), limited + " logged, " + suppressed + " suppressed; " + some);
    }

    /**
     * rev15d: a connect loop used up the one budget, and the reason the next frontend was thrown
     * out was only counted. Each kind of line now has its own budget, and vblk's own failures
     * (internal error, teardown failed) are always logged.
     */
    @Test
    void theReasonAFrontendWasThrownOutIsLoggedAfterAConnectLoop() throws Exception {
        List<String> all = serve("limit", sock -> {
            for (int i = 0; i < 2 * LogLimit.LINES; i++) {
                try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    ch.connect(UnixDomainSocketAddress.of(sock));
                }
            }
            try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                ch.connect(UnixDomainSocketAddress.of(sock));
                ch.write(unknownRequest()); // the server closes the connection and says why
                ByteBuffer sink = ByteBuffer.allocate(64);
                while (ch.read(sink) >= 0) {
                    sink.clear();
                }
            }
        });
        assertTrue(all.stream().anyMatch(l -> l.contains("connection closed") && l.contains("9999")),
                "why the frontend was thrown out is not in the log: " + all);
    }

    /**
     * A served frontend that asks for config outside the config space in a loop: each request is
     * refused and answered (an empty config), and its lines are limited as connects are (10 a
     * minute), the rest counted in one line.
     */
    @Test
    void aGetConfigLoopIsLoggedInAFewLinesAndCounted() throws Exception {
        int over = MessageDescriptor.CONFIG_MAX_SIZE + 1;
        List<String> all = serve("config", sock -> {
            try (VhostUserFrontend f = VhostUserFrontend.connect(sock)) {
                for (int i = 0; i < LOOPS; i++) {
                    assertEquals(null, f.getConfig(0, over), "refused, answered with an empty config");
                }
            }
        });
        long refusedLines = all.stream().filter(l -> l.contains("GET_CONFIG refused")).count();
        long suppressed = 0;
        Pattern p = Pattern.compile("^(\\d+) similar lines suppressed \\(refused requests");
        for (String l : all) {
            Matcher lm = p.matcher(l);
            if (lm.find()) {
                suppressed += Long.parseLong(lm.group(1));
            }
        }
        String some = all.size() + " lines, the first " + all.subList(0, Math.min(30, all.size()));
        // Twice the budget if the loop spanned the end of a window on a slow machine.
        assertTrue(refusedLines <= 2 * LogLimit.LINES, refusedLines + " refusal lines logged; " + some);
        assertEquals(LOOPS, refusedLines + suppressed, refusedLines + " logged, " + suppressed + " suppressed; " + some);
    }

    /** Connections made by {@code frontends}, then one good frontend once they have gone: the server's log lines. */
    private List<String> serve(String name, Frontends frontends) throws Exception {
        List<String> lines = new ArrayList<>();
        Log log = Log.to(l -> {
            synchronized (lines) {
                lines.add(l);
            }
        });
        Path sock = dir.resolve(name + ".sock");
        VhostUserServer server = VhostUserServer.builder(sock, BlkConfig.builder(64L << 20).build(),
                new BackendChoice(BackendKind.NULL, null, log)).log(log).name(name).build();
        Thread serving = new Thread(server::serve, name + "-server");
        serving.start();
        try {
            frontends.run(sock);
            // Served once every connection before it has gone: the loop has been handled.
            try (VhostUserFrontend f = VhostUserFrontend.connect(sock)) {
                assertTrue(f.getFeatures() != 0);
            }
        } finally {
            server.close();
            serving.join(10_000);
        }
        synchronized (lines) {
            return new ArrayList<>(lines);
        }
    }

    /** An unknown request (9999), flags version 1, no payload. */
    private static ByteBuffer unknownRequest() {
        return ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putInt(9999).putInt(1).putInt(0).flip();
    }

    private interface Frontends {
        void run(Path socket) throws Exception;
    }

    /** Each kind has its own budget: a loop of bare connects leaves room for the reason a frontend was thrown out. */
    @Test
    void eachKindHasItsOwnBudget() {
        List<String> lines = new ArrayList<>();
        LogLimit limit = new LogLimit(Log.to(lines::add), () -> 0L, 2, 1_000);
        for (int i = 0; i < 5; i++) {
            limit.info("connect " + i);
        }
        limit.info(LogLimit.Kind.CLOSED, "closed: bad request");
        limit.info(LogLimit.Kind.REFUSED, "refused");
        assertEquals(List.of("connect 0", "connect 1", "closed: bad request", "refused"), lines);
        limit.flush();
        assertTrue(lines.get(4).startsWith("3 similar lines suppressed (frontend connects"), lines.toString());
    }

    /** The window: the first lines, then a count when a line comes after it ends, and a flush with nothing left says nothing. */
    @Test
    void linesPastTheLimitAreCountedInTheNextWindow() {
        List<String> lines = new ArrayList<>();
        long[] now = {0};
        LogLimit limit = new LogLimit(Log.to(lines::add), () -> now[0], 3, 1_000);
        for (int i = 0; i < 5; i++) {
            limit.info("line " + i);
        }
        assertEquals(List.of("line 0", "line 1", "line 2"), lines);
        now[0] = 999;
        limit.info("line 5");
        assertEquals(3, lines.size(), "still the first window");
        now[0] = 1_000;
        limit.info("line 6");
        assertEquals(5, lines.size(), lines.toString());
        assertTrue(lines.get(3).startsWith("3 similar lines suppressed"), lines.toString());
        assertEquals("line 6", lines.get(4));
        limit.flush();
        assertEquals(5, lines.size(), "nothing suppressed since");
        limit.info("line 7");
        limit.info("line 8");
        limit.info("line 9");
        limit.flush();
        assertTrue(lines.get(lines.size() - 1).startsWith("1 similar lines suppressed"), lines.toString());
    }
}
