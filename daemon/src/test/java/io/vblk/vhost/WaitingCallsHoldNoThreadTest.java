package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
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

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.daemon.Main;

/**
 * Calls that wait for the daemon's start (an export held open by a server that never greets)
 * hold no RPC thread: with more of them than the RPC pool has threads (32), config.status still
 * answers "starting", and once the start ends every waiting call is answered, each client's
 * requests in order (rev15c: four waiting calls held up config.status).
 */
class WaitingCallsHoldNoThreadTest {
    private static final int HELD_MS = 600_000;
    /** More than ControlThreads.RPC_HANDLERS. */
    private static final int WAITING = 40;

    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("unchecked")
    void configStatusAnswersWhileManyCallsWait() throws Exception {
        Path control = dir.resolve("control.sock");
        Path config = dir.resolve("vblk.json");
        List<SocketChannel> waiting = new ArrayList<>();
        ExecutorService pool = Executors.newSingleThreadExecutor();
        try (StalledNbdServer server = new StalledNbdServer()) {
            Files.writeString(config, "{\"iothreads\": [], \"exports\": ["
                    + DaemonRig.json(Map.of("id", "n", "image", "null:1M", "socket", dir.resolve("n.sock").toString())) + ","
                    + DaemonRig.json(Map.of("id", "slow", "image", server.address(), "socket", dir.resolve("slow.sock").toString(),
                            "connect_timeout_ms", HELD_MS)) + "]}");
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
            Thread daemon = new Thread(() -> Main.run(new String[] {"daemon", "--control", control.toString(),
                "--config", config.toString(), "--persist"}, o, o, false), "test-daemon");
            daemon.start();
            try {
                assertTrue(server.accepted.await(60, TimeUnit.SECONDS), "the daemon connected to the stalled server");
                for (int i = 0; i < WAITING; i++) {
                    SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
                    ch.connect(UnixDomainSocketAddress.of(control));
                    // two requests in one write: the second (answered at once alone) must wait behind the first
                    String lines = "{\"jsonrpc\":\"2.0\",\"method\":\"export.list\",\"id\":1}\n"
                            + "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.version\",\"id\":2}\n";
                    ch.write(ByteBuffer.wrap(lines.getBytes(StandardCharsets.UTF_8)));
                    waiting.add(ch);
                }
                Thread.sleep(1000); // let the daemon read them all (not an assertion: it only makes the test bite)
                Future<Map<String, Object>> status = pool.submit(() -> {
                    try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                        return (Map<String, Object>) c.call("config.status", null).get("result");
                    }
                });
                // A hang guard, not a timing: before, the calls held every RPC thread until the start ended.
                Map<String, Object> st = status.get(60, TimeUnit.SECONDS);
                assertEquals("starting", st.get("state"), st.toString());

                server.release(); // the stalled open fails: the start ends, every waiting call is answered
                for (SocketChannel ch : waiting) {
                    BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
                    String first = in.readLine();
                    String second = in.readLine();
                    assertTrue(first != null && first.contains("\"id\":1") && first.contains("\"n\""), first);
                    assertTrue(second != null && second.contains("\"id\":2") && second.contains("version"), second);
                }
            } finally {
                for (SocketChannel ch : waiting) {
                    ch.close();
                }
                pool.shutdownNow();
                server.release();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                while (daemon.isAlive() && System.nanoTime() < deadline) {
                    try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                        c.call("daemon.shutdown", null);
                    } catch (Exception ignored) {
                        // the daemon may not be up, or gone
                    }
                    daemon.join(200);
                }
            }
        }
    }
}
