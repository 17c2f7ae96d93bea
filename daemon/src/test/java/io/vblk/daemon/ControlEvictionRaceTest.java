package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * irev5 (outside review): with every control place taken, the acceptor picks the client idle
 * longest (no turn running), then closes it. When that client's turn starts in between (a request
 * that stalls: an {@code export.add} waiting on an NBD handshake), the close waited for the turn
 * to end, and the acceptor with it: no client was accepted meanwhile. Now the acceptor never
 * waits for a client; a victim whose turn began is passed over for the next idle one.
 *
 * <p>The turn is started in the window through the server's package-private {@code beforeEvict}
 * hook (no real part can time it into a few instructions). Before the fix the new client's
 * {@code ping} got no answer until the stalled request was let go (the guard below fails).
 */
class ControlEvictionRaceTest {
    private static final Duration GUARD = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private ControlThreads threads;
    private ControlServer server;
    private final CountDownLatch stalled = new CountDownLatch(1);
    private final CountDownLatch release = new CountDownLatch(1);

    @BeforeEach
    void start() {
        Log log = Log.to(line -> { });
        threads = new ControlThreads(log);
        ControlServer.LineHandler handler = line -> {
            if (line.equals("stall")) {
                stalled.countDown();
                try {
                    release.await(60, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return "stalled";
            }
            return line.equals("ping") ? "pong" : "other";
        };
        server = new ControlServer(dir.resolve("control.sock"), SocketFile.DEFAULT_MODE, null, null, handler, log, threads);
    }

    @AfterEach
    void stop() {
        release.countDown();
        server.close();
        threads.close();
    }

    private SocketChannel connect() throws IOException {
        return ControlSocket.connect(server.path());
    }

    private void awaitClients(int n) {
        assertTimeoutPreemptively(GUARD, () -> {
            while (server.clientCount() < n) {
                Thread.sleep(10);
            }
        });
    }

    @Test
    void aVictimWhoseTurnStartsDoesNotHoldTheAcceptor() throws Exception {
        List<SocketChannel> idle = new ArrayList<>();
        try {
            // The first client accepted is the one idle longest: the acceptor's first pick.
            SocketChannel first = connect();
            idle.add(first);
            awaitClients(1);
            for (int i = 1; i < ControlServer.MAX_CLIENTS; i++) {
                idle.add(connect());
            }
            awaitClients(ControlServer.MAX_CLIENTS);
            AtomicBoolean once = new AtomicBoolean();
            server.beforeEvict = () -> {
                if (once.compareAndSet(false, true)) {
                    try {
                        // The picked client's turn starts now and stalls in its request.
                        ControlSocket.sendLine(first, "stall");
                        assertTrue(stalled.await(30, TimeUnit.SECONDS), "the stalled request began");
                    } catch (IOException | InterruptedException e) {
                        throw new AssertionError(e);
                    }
                }
            };
            try (SocketChannel admin = connect()) {
                ControlSocket.sendLine(admin, "ping");
                assertEquals("pong", assertTimeoutPreemptively(GUARD, () -> ControlSocket.readLine(admin)),
                        "a new client is served while the picked victim's request stalls");
                assertEquals(0, stalled.getCount(), "the race was run");
                release.countDown();
                assertEquals("stalled", assertTimeoutPreemptively(GUARD, () -> ControlSocket.readLine(first)),
                        "the passed-over client was not closed: its request is answered");
                assertEquals(null, assertTimeoutPreemptively(GUARD, () -> ControlSocket.readLine(idle.get(1))),
                        "the next idle client made room instead");
            }
        } finally {
            for (SocketChannel c : idle) {
                c.close();
            }
        }
    }
}
