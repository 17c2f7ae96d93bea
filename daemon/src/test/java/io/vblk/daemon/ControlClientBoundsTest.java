package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * ihard (irev3's reported findings): the control server against a client turn that throws an
 * {@link Error}, and against partial lines at and past {@link ControlServer#MAX_LINE_BYTES}, over
 * a real Unix socket and the daemon's real event loop and pools. The request handler is a stand-in
 * for {@link JsonRpc} so that an OutOfMemoryError or StackOverflowError can be thrown on demand
 * (no real request makes one reliably). The timeouts are failure guards against a client that is
 * never closed, not speed measurements.
 */
class ControlClientBoundsTest {
    private static final Duration GUARD = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private ControlThreads threads;
    private ControlServer server;

    @BeforeEach
    void start() {
        Log log = Log.to(line -> { });
        threads = new ControlThreads(log);
        ControlServer.LineHandler handler = line -> switch (line) {
            case "ping" -> "pong";
            case "oom" -> throw new OutOfMemoryError("simulated: a response too large for the heap");
            case "soe" -> throw new StackOverflowError("simulated");
            case "assert" -> throw new AssertionError("simulated bug");
            default -> "other " + line.length();
        };
        server = new ControlServer(dir.resolve("control.sock"), SocketFile.DEFAULT_MODE, null, null, handler, log, threads);
    }

    @AfterEach
    void stop() {
        server.close();
        threads.close();
    }

    private SocketChannel connect() throws IOException {
        return ControlSocket.connect(server.path());
    }

    private String ask(SocketChannel ch, String line) throws IOException {
        ControlSocket.send(ch, (line + "\n").getBytes(StandardCharsets.US_ASCII));
        return assertTimeoutPreemptively(GUARD, () -> ControlSocket.readLine(ch));
    }

    @Test
    void aTurnThatThrowsAnErrorClosesItsClientAndTheServerGoesOn() throws Exception {
        for (String boom : new String[] {"oom", "soe", "assert", "oom"}) {
            try (SocketChannel victim = connect(); SocketChannel bystander = connect()) {
                assertEquals("pong", ask(victim, "ping"));
                assertEquals("pong", ask(bystander, "ping"));
                // No answer, and the connection ends: its socket, registration and buffer are released.
                assertEquals(null, ask(victim, boom), boom + ": the client is closed");
                assertEquals("pong", ask(bystander, "ping"), boom + ": another client is still served");
            }
            try (SocketChannel next = connect()) {
                assertEquals("pong", ask(next, "ping"), boom + ": a new client is accepted and served");
            }
        }
        assertTimeoutPreemptively(GUARD, () -> {
            while (server.clientCount() != 0) {
                Thread.sleep(10);
            }
        });
    }

    @Test
    void aLineAtTheLimitIsServedWithoutTheBufferGrowingPastIt() throws Exception {
        try (SocketChannel ch = connect()) {
            byte[] line = new byte[ControlServer.MAX_LINE_BYTES + 1];
            Arrays.fill(line, (byte) 'x');
            line[line.length - 1] = '\n';
            ControlSocket.send(ch, line);
            assertEquals("other " + ControlServer.MAX_LINE_BYTES, assertTimeoutPreemptively(GUARD, () -> ControlSocket.readLine(ch)));
            int capacity = server.largestLineCapacity();
            assertTrue(capacity <= ControlServer.MAX_LINE_BYTES, "partial-line buffer " + capacity
                    + " bytes for a limit of " + ControlServer.MAX_LINE_BYTES);
            assertEquals("pong", ask(ch, "ping"), "a line at the limit keeps the connection");
        }
    }

    @Test
    void aPartialLinePastTheLimitIsAnsweredWithAnErrorAndDropped() throws Exception {
        try (SocketChannel ch = connect()) {
            // One byte past the limit, and nothing more: the server reads all of it before it
            // answers and closes, so the close carries no unread data (no reset hides the answer).
            byte[] part = new byte[ControlServer.MAX_LINE_BYTES + 1];
            Arrays.fill(part, (byte) 'x');
            String response = assertTimeoutPreemptively(GUARD, () -> {
                ControlSocket.send(ch, part);
                return ControlSocket.readLine(ch);
            });
            assertTrue(response != null && response.contains("\"error\"") && response.contains("longer than"),
                    "an error response, got " + response);
            assertEquals(null, assertTimeoutPreemptively(GUARD, () -> ControlSocket.readLine(ch)), "then end of stream");
        }
    }

    @Test
    void theLineBufferNeverGrowsPastItsLimit() {
        int limit = ControlServer.MAX_LINE_BYTES;
        ControlServer.LineBuffer buffer = new ControlServer.LineBuffer(limit);
        byte[] piece = new byte[(64 << 10) - 1]; // not a divisor of the limit: the last append is partial
        while (buffer.append(piece, 0, piece.length)) {
            assertTrue(buffer.capacity() <= limit, "capacity " + buffer.capacity());
        }
        assertTrue(buffer.length() > limit - piece.length && buffer.length() <= limit, "length " + buffer.length());
        int rest = limit - buffer.length();
        assertTrue(buffer.append(piece, 0, rest), "up to the limit exactly");
        assertEquals(limit, buffer.length());
        assertFalse(buffer.append(piece, 0, 1), "one byte past the limit");
        assertEquals(limit, buffer.length(), "a refused append changes nothing");
        assertEquals(limit, buffer.capacity());
    }
}
