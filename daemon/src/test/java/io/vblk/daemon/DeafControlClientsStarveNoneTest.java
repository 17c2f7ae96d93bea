package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * Review rev11b: a control client that pipelines requests and reads none of the answers holds an RPC
 * handler thread for {@link ControlServer#WRITE_WAIT_MS} (5 s) in a blocking wait for room in its
 * socket buffer (ControlServer.write). There are {@link ControlThreads#RPC_HANDLERS} (32) of them
 * for every client: 200 such clients (below MAX_CLIENTS, so none is evicted for the honest one)
 * keep every handler busy in waves of 32 x 5 s, and an honest client's one-line request waits
 * behind all of them (about 30 s here; a client that keeps reconnecting keeps it so). The honest
 * client must be answered meanwhile; the 20 s guard is a failure guard against a control socket
 * that answers nobody, not a speed measurement.
 */
class DeafControlClientsStarveNoneTest {
    private static final Duration GUARD = Duration.ofSeconds(20);
    private static final int DEAF = 200;

    @TempDir
    Path dir;
    private Daemon daemon;
    private ControlServer server;
    private final List<SocketChannel> deaf = new ArrayList<>();

    @BeforeEach
    void start() {
        Log log = Log.to(line -> { });
        daemon = new Daemon(log);
        server = new ControlServer(dir.resolve("control.sock"), SocketFile.DEFAULT_MODE, null, null, new JsonRpc(daemon, log), log,
                daemon.controlThreads());
    }

    @AfterEach
    void stop() throws Exception {
        for (SocketChannel ch : deaf) {
            ch.close();
        }
        server.close();
        daemon.close();
    }

    @Test
    void clientsThatReadNoAnswersDoNotStarveAnHonestOne() throws Exception {
        // About 100 KB of requests whose answers (about 250 bytes each) overflow the socket buffer.
        byte[] requests = "{\"jsonrpc\":\"2.0\",\"method\":\"methods.list\",\"id\":1}\n".repeat(2000).getBytes(StandardCharsets.US_ASCII);
        for (int i = 0; i < DEAF; i++) {
            SocketChannel ch = ControlSocket.connect(server.path());
            deaf.add(ch);
            ControlSocket.send(ch, requests);
        }
        Thread.sleep(500);
        try (SocketChannel honest = ControlSocket.connect(server.path())) {
            String answer = assertTimeoutPreemptively(GUARD, () -> {
                ControlSocket.sendLine(honest, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.version\",\"id\":1}");
                return ControlSocket.readLine(honest);
            }, "an honest control client was not answered while " + DEAF + " clients read none of their answers");
            assertTrue(answer.contains("\"result\""), answer);
        }
    }
}
