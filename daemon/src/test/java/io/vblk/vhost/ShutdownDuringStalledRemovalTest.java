package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * irev4 (a limit the last closing note listed as untested): {@code daemon.shutdown} while an
 * {@code export.remove} waits in its drain for an NBD server stopped by SIGSTOP, with a read in
 * flight. The shutdown is accepted at once, and from then on every change is refused; the daemon
 * does not exit while the drain is stalled (stop drains: the read must not be dropped), does not
 * deadlock against the removal (which takes the change lock once more when its close ends), and
 * once the server resumes the read completes, the removal answers, and the daemon exits with
 * status 0. The guards are failure guards against a blocked call, not speed measurements.
 *
 * <p>What bounds the wait when the server never resumes: the NBD disk's request timeout (30 s, then
 * a reconnect whose handshake times out, then EIO after the retry time), and for SIGTERM the
 * shutdown hook, which halts with status 1 after 30 s. Neither is exercised here (a minute each).
 */
class ShutdownDuringStalledRemovalTest {
    private static final Duration GUARD = Duration.ofSeconds(20);
    private static final int SHUTTING_DOWN = -32004;

    @TempDir
    Path dir;

    @Test
    void aShutdownWaitsForAStalledRemovalAndEndsWhenItDrains() throws Exception {
        Path nbd = dir.resolve("nbd.sock");
        Process server = DaemonRig.nbdkitMemory(dir, nbd);
        Path control = dir.resolve("control.sock");
        Path slow = dir.resolve("slow.sock");
        try (DaemonRig d = new DaemonRig(control)) {
            DaemonRig.awaitListening(nbd, "nbdkit");
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("export.add", DaemonRig.json(Map.of("id", "slow", "image", "nbd+unix:///?socket=" + nbd,
                    "socket", slow.toString(), "iothreads", List.of("t0"))));
            d.result("export.add", DaemonRig.exportOnT0(dir, "file", dir.resolve("file.sock")));
            try (TestGuest g = new TestGuest(); VhostUserFrontend f = VhostUserFrontend.connect(slow);
                    QemuFlow qemu = new QemuFlow(f, g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                q.write(0, BlkQueue.pattern(0, 4096, 3));
                DaemonRig.stopProcess(server.pid());
                CompletableFuture<Map<String, Object>> removal;
                try {
                    q.add(0 /* VIRTIO_BLK_T_IN */, 8, q.dataGpa, 4096, true);
                    q.publish();
                    awaitInFlight(d, "slow");
                    removal = CompletableFuture.supplyAsync(() -> {
                        try {
                            return d.call("export.remove", "{\"id\":\"slow\",\"force\":true}"); // attached: forced
                        } catch (IOException e) {
                            throw new java.io.UncheckedIOException(e);
                        }
                    });
                    assertTimeoutPreemptively(GUARD, () -> {
                        while (((List<?>) d.result("export.list", null)).size() != 1) {
                            Thread.sleep(5);
                        }
                    });
                    assertTimeoutPreemptively(GUARD, () -> {
                        assertEquals(Map.of("shutting_down", true), d.result("daemon.shutdown", null));
                    });
                    // The other export drains and goes; the control socket still answers, refusing changes.
                    Thread.sleep(500);
                    assertTrue(d.running(), "the daemon waits for the stalled drain");
                    assertFalse(removal.isDone(), "the removal still waits for the stalled server");
                    assertTimeoutPreemptively(GUARD, () -> {
                        Map<String, Object> refused = d.call("export.add",
                                DaemonRig.exportOnT0(dir, "late", dir.resolve("late.sock")));
                        assertEquals(SHUTTING_DOWN, ((Number) DaemonRig.error(refused).get("code")).intValue(), refused.toString());
                    });
                } finally {
                    new ProcessBuilder("kill", "-CONT", Long.toString(server.pid())).start().waitFor();
                }
                Map<String, Object> removed = removal.get(GUARD.toSeconds(), TimeUnit.SECONDS);
                assertEquals(Map.of("id", "slow", "removed", true, "frontend_disconnected", true), removed.get("result"), removed.toString());
                assertEquals(0, q.status(1), "the read the stopped server held completed before the close");
                assertEquals(0, d.awaitExit(), d.stderr());
            }
        } finally {
            server.destroyForcibly();
        }
    }

    @SuppressWarnings("unchecked")
    private static void awaitInFlight(DaemonRig d, String id) throws Exception {
        long n = 0;
        for (int i = 0; i < 2000; i++) {
            Map<String, Object> stats = (Map<String, Object>) d.result("export.stats", "{\"id\":\"" + id + "\"}");
            n = ((Number) ((List<Map<String, Object>>) stats.get("queues")).get(0).get("in_flight")).longValue();
            if (n == 1) {
                return;
            }
            Thread.sleep(5);
        }
        throw new AssertionError("in flight " + n);
    }
}
