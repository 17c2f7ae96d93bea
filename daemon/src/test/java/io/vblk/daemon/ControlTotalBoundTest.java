package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * irev4: the control clients' partial lines together. Each client's line is bounded at
 * {@link ControlServer#MAX_LINE_BYTES} (1 MiB) and there may be {@link ControlServer#MAX_CLIENTS}
 * (256) clients: 256 MiB of heap, for clients that only send half a line each. Before the total
 * bound, {@link #partialLinesOfManyClientsAreBoundedInTotal} held 40 MiB for 40 such clients.
 */
class ControlTotalBoundTest {
    private static final Duration GUARD = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private ControlThreads threads;
    private ControlServer server;

    @BeforeEach
    void start() {
        Log log = Log.to(line -> { });
        threads = new ControlThreads(log);
        ControlServer.LineHandler handler = line -> line.equals("ping") ? "pong" : "other " + line.length();
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
    void partialLinesOfManyClientsAreBoundedInTotal() throws Exception {
        List<SocketChannel> hogs = new ArrayList<>();
        byte[] almost = new byte[ControlServer.MAX_LINE_BYTES - 64];
        Arrays.fill(almost, (byte) 'x');
        try (SocketChannel bystander = connect()) {
            assertEquals("pong", ask(bystander, "ping"));
            for (int i = 0; i < 40; i++) {
                SocketChannel ch = connect();
                hogs.add(ch);
                try {
                    assertTimeoutPreemptively(GUARD, () -> ControlSocket.send(ch, almost));
                } catch (Exception closed) { // an IOException, rethrown unchecked by the guard
                    // refused for the total: what the bound does
                }
            }
            // Every byte sent has been read (or its client closed) once the server answers the bystander.
            assertEquals("pong", ask(bystander, "ping"), "a client with a short line is still served");
            long total = server.totalLineCapacity();
            long bound = ControlServer.SHARED_LINE_BYTES + (long) server.clientCount() * ControlServer.OWN_LINE_BYTES;
            assertTrue(total <= bound, "partial lines hold " + total + " bytes; the bound is " + bound);
            try (SocketChannel late = connect()) {
                assertEquals("pong", ask(late, "ping"), "a new client is served while the shared pool is used up");
                byte[] line = new byte[ControlServer.OWN_LINE_BYTES - 1];
                Arrays.fill(line, (byte) 'y');
                assertEquals("other " + line.length, ask(late, new String(line, StandardCharsets.US_ASCII)),
                        "a line within a client's own allowance is served whatever the others hold");
            }
            for (SocketChannel h : hogs) {
                h.close();
            }
            hogs.clear();
            assertTimeoutPreemptively(GUARD, () -> {
                while (server.clientCount() > 1) {
                    Thread.sleep(10);
                }
            });
            assertEquals(0, server.sharedLineBytesInUse(), "the shared pool is whole again once the clients are gone");
            byte[] big = new byte[ControlServer.MAX_LINE_BYTES];
            Arrays.fill(big, (byte) 'z');
            assertEquals("other " + big.length, ask(bystander, new String(big, StandardCharsets.US_ASCII)),
                    "a line at the limit is served again");
        } finally {
            for (SocketChannel h : hogs) {
                h.close();
            }
        }
    }

    /**
     * 256 clients that connect and never send a byte took every place, and the administrator's
     * own client got "too many control clients" for as long as they stayed. Now a new client
     * takes the place of the one idle longest.
     */
    @Test
    void idleClientsDoNotLockOutANewOne() throws Exception {
        List<SocketChannel> idle = new ArrayList<>();
        try {
            for (int i = 0; i < ControlServer.MAX_CLIENTS; i++) {
                idle.add(connect());
            }
            assertTimeoutPreemptively(GUARD, () -> {
                while (server.clientCount() < ControlServer.MAX_CLIENTS) {
                    Thread.sleep(10);
                }
            });
            for (int round = 0; round < 3; round++) {
                try (SocketChannel admin = connect()) {
                    assertEquals("pong", ask(admin, "ping"), "round " + round + ": a new client is served");
                }
            }
            assertEquals(null, assertTimeoutPreemptively(GUARD, () -> ControlSocket.readLine(idle.get(0))), "the longest idle was closed");
            assertTrue(server.clientCount() <= ControlServer.MAX_CLIENTS);
        } finally {
            for (SocketChannel c : idle) {
                c.close();
            }
        }
    }

    @Test
    void theSharedPoolIsGivenBackByResetAndRelease() {
        ControlServer.LinePool pool = new ControlServer.LinePool(512 << 10);
        ControlServer.LineBuffer a = new ControlServer.LineBuffer(1 << 20, 4096, pool);
        ControlServer.LineBuffer b = new ControlServer.LineBuffer(1 << 20, 4096, pool);
        byte[] piece = new byte[100_000];
        int n = 0;
        while (a.append(piece, 0, piece.length)) {
            n++;
        }
        assertTrue(a.refusedForPool(), "a's growth stopped at the pool, not its own limit");
        assertTrue(n >= 4 && n <= 6, "appended " + n);
        assertTrue(b.append(piece, 0, 4000), "b's own allowance needs nothing from the pool");
        assertTrue(!b.append(piece, 0, piece.length), "the pool is used up");
        a.reset();
        assertTrue(b.append(piece, 0, piece.length), "a's reset gave its share back");
        b.release();
        a.release();
        assertEquals(0, pool.inUse());
    }
}
