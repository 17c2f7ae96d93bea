package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * irev4: control calls that wait on a stalled server (an export.add whose NBD server accepts and
 * never greets; an export.remove whose drain waits on a stopped server is the same) each hold an
 * RPC handler thread for as long as they wait. With four handlers, four such calls made every
 * other client's request, export.list and daemon.shutdown included, wait behind them (a control
 * plane that stops answering for as long as anyone can keep four calls stalled). Now eight stalled
 * adds leave the control plane answering: a ninth client's calls are answered while all eight
 * still wait.
 */
class StalledCallsAttackTest {
    private static final int STALLED = 8;

    @TempDir
    Path dir;

    @Test
    void stalledCallsDoNotStopOtherClientsCalls() throws Exception {
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "stalled-nbd");
            t.setDaemon(true);
            return t;
        });
        CountDownLatch accepted = new CountDownLatch(STALLED);
        CountDownLatch release = new CountDownLatch(1);
        try (ServerSocket listener = new ServerSocket(0, 64, InetAddress.getLoopbackAddress());
                DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            pool.submit(() -> {
                while (true) {
                    Socket s = listener.accept();
                    accepted.countDown();
                    pool.submit(() -> {
                        try (s) {
                            release.await(); // no greeting: the handshake stalls
                        }
                        return null;
                    });
                }
            });
            List<Future<Map<String, Object>>> adds = new ArrayList<>();
            for (int i = 0; i < STALLED; i++) {
                String spec = DaemonRig.json(Map.of("id", "s" + i, "image", "nbd://127.0.0.1:" + listener.getLocalPort() + "/x",
                        "socket", dir.resolve("s" + i + ".sock").toString()));
                adds.add(pool.submit(() -> d.call("export.add", spec)));
            }
            assertTrue(accepted.await(60, TimeUnit.SECONDS), "every add connected to the stalled server");
            Future<Object> other = pool.submit(() -> {
                d.result("export.list", null);
                d.result("daemon.version", null);
                return d.result("export.add", DaemonRig.json(Map.of("id", "n", "image", "null:1M",
                        "socket", dir.resolve("n.sock").toString())));
            });
            other.get(90, TimeUnit.SECONDS);
            long done = adds.stream().filter(Future::isDone).count();
            assertEquals(0, done, "another client's calls were answered only after " + done + " stalled adds ended");
            release.countDown();
            for (Future<Map<String, Object>> a : adds) {
                a.get(90, TimeUnit.SECONDS);
            }
        } finally {
            release.countDown();
            pool.shutdownNow();
        }
    }
}
