package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * export.add of a disk on an NBD server that stalls the handshake (accepts the connection and
 * never greets): the add waits for the connect timeout, and while it waits every other change of
 * the daemon goes on (another export.add, export.list, export.remove), a second add of the same
 * id is refused at once, and a shutdown is not held by it. The daemon opens the disk outside the
 * lock that serializes export changes. The server is a plain Java socket that says nothing (no
 * real server stalls on purpose); the daemon runs as the command line starts it.
 */
class SlowNbdExportAddTest {
    /**
     * The stalled add's connect timeout: far longer than the test (the server hangs up when the
     * test is done with it), so that a loaded machine's slow control calls all land while the
     * add still waits; with the default 5 s they could not be sure to.
     */
    private static final int HELD_MS = 600_000;

    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("unchecked")
    void whileOneAddWaitsOnAStalledNbdServerTheOtherChangesProceed() throws Exception {
        try (StalledNbdServer server = new StalledNbdServer();
             DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Future<Map<String, Object>> slow = server.pool.submit(() -> d.call("export.add", DaemonRig.json(Map.of("id", "slow",
                    "image", server.address(), "socket", dir.resolve("slow.sock").toString(),
                    "connect_timeout_ms", HELD_MS))));
            assertTrue(server.accepted.await(60, TimeUnit.SECONDS), "the daemon connected to the stalled server");

            // The open is under way (the server holds its handshake): the rest of the daemon goes on.
            d.result("export.add", DaemonRig.json(Map.of("id", "n", "image", "null:1M",
                    "socket", dir.resolve("n.sock").toString())));
            List<Map<String, Object>> listed = (List<Map<String, Object>>) d.result("export.list", null);
            assertEquals(List.of("n"), listed.stream().map(m -> m.get("id")).toList(), "the export being opened is not listed");
            Map<String, Object> dup = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "slow",
                    "image", "null:1M", "socket", dir.resolve("other.sock").toString()))));
            assertTrue(dup.get("message").toString().contains("already exists"), dup.toString());
            Map<String, Object> sameSocket = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "m",
                    "image", "null:1M", "socket", dir.resolve("slow.sock").toString()))));
            assertTrue(sameSocket.get("message").toString().contains("already used"), sameSocket.toString());
            d.result("export.remove", DaemonRig.json(Map.of("id", "n")));
            // Before the fix each call above waited for the stalled open (the connect timeout) to end.
            assertFalse(slow.isDone(), "the other changes finished while the stalled add still waited");
            server.release(); // the server hangs up: the add fails now, not at its connect timeout

            Map<String, Object> failed = DaemonRig.error(slow.get(90, TimeUnit.SECONDS));
            assertTrue(failed.get("message").toString().contains("cannot open"), failed.toString());
            assertEquals(List.of(), d.result("export.list", null), "a failed add leaves nothing behind");
            // Its id and socket are free again.
            d.result("export.add", DaemonRig.json(Map.of("id", "slow", "image", "null:1M",
                    "socket", dir.resolve("slow.sock").toString())));
        }
    }

    @Test
    void aShutdownIsNotHeldByAnAddWaitingOnAStalledNbdServer() throws Exception {
        try (StalledNbdServer server = new StalledNbdServer();
             DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Path other = dir.resolve("n.sock");
            d.result("export.add", DaemonRig.json(Map.of("id", "n", "image", "null:1M", "socket", other.toString())));
            Future<Map<String, Object>> slow = server.pool.submit(() -> d.call("export.add", DaemonRig.json(Map.of("id", "slow",
                    "image", server.address(), "socket", dir.resolve("slow.sock").toString(),
                    "connect_timeout_ms", HELD_MS))));
            assertTrue(server.accepted.await(60, TimeUnit.SECONDS), "the daemon connected to the stalled server");
            Map<String, Object> r = d.call("daemon.shutdown", null);
            assertEquals(Boolean.TRUE, ((Map<?, ?>) r.get("result")).get("shutting_down"));
            // The shutdown closes the other export (its socket file goes) without waiting for the
            // stalled open; before the fix it waited for the lock the open held.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (java.nio.file.Files.exists(other) && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertFalse(java.nio.file.Files.exists(other), "the shutdown closed export n");
            assertFalse(slow.isDone(), "export n was closed while the stalled add still waited");
            server.release();
            try {
                Map<String, Object> late = slow.get(90, TimeUnit.SECONDS);
                assertTrue(late.containsKey("error"), "an add that ends after the shutdown fails: " + late);
            } catch (java.util.concurrent.ExecutionException e) {
                // The daemon ended its control plane before the add's answer: it never got one.
                assertTrue(e.getCause() instanceof IOException, e.toString());
            }
            assertFalse(java.nio.file.Files.exists(dir.resolve("slow.sock")), "and leaves no socket behind");
        }
    }
}
