package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.engine.BlkConfig;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Review rev15d: the per-server LogLimit was one budget for every line a connection causes,
 * the "connection closed: REASON" line of a frontend the server threw out included (and the
 * "internal error" / "teardown failed" ends). A few connect-and-close loops in the same minute
 * (any local process that can reach the socket, a refused peer too) use up the 10 lines, and
 * then the reason the next frontend (a VM) was disconnected was never logged, only counted. Each
 * kind of line now has its own budget ({@link LogLimit.Kind}), and vblk's own failures (internal
 * error, teardown failed) are always logged.
 */
class ConnectLimitHidesErrorsTest {
    @TempDir
    Path dir;

    @Test
    void theReasonAFrontendWasThrownOutIsLoggedAfterAConnectLoop() throws Exception {
        List<String> lines = new ArrayList<>();
        Log log = Log.to(l -> {
            synchronized (lines) {
                lines.add(l);
            }
        });
        Path sock = dir.resolve("limit.sock");
        VhostUserServer server = VhostUserServer.builder(sock, BlkConfig.builder(64L << 20).build(),
                new BackendChoice(BackendKind.NULL, null, log)).log(log).name("limit").build();
        Thread serving = new Thread(server::serve, "limit-server");
        serving.start();
        try {
            for (int i = 0; i < 2 * LogLimit.LINES; i++) {
                try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    ch.connect(UnixDomainSocketAddress.of(sock));
                }
            }
            try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                ch.connect(UnixDomainSocketAddress.of(sock));
                // An unknown request (9999), flags version 1, no payload: the server closes the connection and says why.
                ch.write(ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putInt(9999).putInt(1).putInt(0).flip());
                ByteBuffer sink = ByteBuffer.allocate(64);
                while (ch.read(sink) >= 0) {
                    sink.clear();
                }
            }
            try (VhostUserFrontend f = VhostUserFrontend.connect(sock)) { // the one before has been torn down
                assertTrue(f.getFeatures() != 0);
            }
        } finally {
            server.close();
            serving.join(10_000);
        }
        List<String> all;
        synchronized (lines) {
            all = new ArrayList<>(lines);
        }
        assertTrue(all.stream().anyMatch(l -> l.contains("connection closed") && l.contains("9999")),
                "why the frontend was thrown out is not in the log: " + all);
    }
}
