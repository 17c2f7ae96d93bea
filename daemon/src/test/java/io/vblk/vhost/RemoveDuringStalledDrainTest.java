package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import java.io.IOException;
import java.nio.file.Files;
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
 * ihard (irev3's reported finding): export.remove of an export whose NBD server is stopped
 * (SIGSTOP) with a read in flight waits in its drain for as long as the server stalls. That wait
 * must not hold the daemon's change lock: meanwhile other exports are added and removed, the
 * removed export is already gone for every other operation (resize answers "no export", its id
 * and socket stay reserved, its I/O thread stays in use), and once the server resumes the remove
 * completes. Before the fix the remove held the lock through the drain and unlisted the export
 * only after it: the test failed at its first guard (the export still listed 20 s later), and
 * every change after it would have waited just as long.
 * The guards are failure guards against a blocked call, not speed measurements.
 */
class RemoveDuringStalledDrainTest {
    private static final Duration GUARD = Duration.ofSeconds(20);
    private static final int NOT_FOUND = -32000;
    private static final int ALREADY_EXISTS = -32001;
    private static final int IN_USE = -32002;

    @TempDir
    Path dir;

    private String add(String id, Path socket) throws IOException {
        return DaemonRig.exportOnT0(dir, id, socket);
    }

    private static int code(Map<String, Object> response) {
        return ((Number) DaemonRig.error(response).get("code")).intValue();
    }

    @Test
    void aRemoveWaitingForAStalledDrainHoldsNoOtherChange() throws Exception {
        Path nbd = dir.resolve("nbd.sock");
        Process server = DaemonRig.nbdkitMemory(dir, nbd);
        Path control = dir.resolve("control.sock");
        Path slow = dir.resolve("slow.sock");
        try (DaemonRig d = new DaemonRig(control)) {
            DaemonRig.awaitListening(nbd, "nbdkit");
            d.result("iothread.add", "{\"id\":\"t0\"}");
            String slowSpec = DaemonRig.json(Map.of("id", "slow", "image", "nbd+unix:///?socket=" + nbd,
                    "socket", slow.toString(), "iothreads", List.of("t0")));
            d.result("export.add", slowSpec);
            try (TestGuest g = new TestGuest(); VhostUserFrontend f = VhostUserFrontend.connect(slow); QemuFlow qemu = new QemuFlow(f, g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                q.write(0, BlkQueue.pattern(0, 4096, 7)); // warm: the connection to the server works
                DaemonRig.stopProcess(server.pid());
                CompletableFuture<Map<String, Object>> removal = null;
                try {
                    q.add(0 /* VIRTIO_BLK_T_IN */, 8, q.dataGpa, 4096, true);
                    q.publish();
                    for (int i = 0; i < 2000 && inFlight(d, "slow") != 1; i++) {
                        Thread.sleep(5);
                    }
                    assertEquals(1, inFlight(d, "slow"), () -> "stats " + statsText(d) + " status " + q.status(1));
                    removal = CompletableFuture.supplyAsync(() -> {
                        try {
                            return d.call("export.remove", "{\"id\":\"slow\",\"force\":true}"); // attached: forced
                        } catch (IOException e) {
                            throw new java.io.UncheckedIOException(e);
                        }
                    });
                    // Unlisted at once (under the lock), drained after (outside it).
                    assertTimeoutPreemptively(GUARD, () -> {
                        while (((List<?>) d.result("export.list", null)).size() != 0) {
                            Thread.sleep(5);
                        }
                    });
                    assertTimeoutPreemptively(GUARD, () -> {
                        d.result("export.add", add("other", dir.resolve("other.sock")));
                        assertEquals(1, ((List<?>) d.result("export.list", null)).size());
                        d.result("export.remove", "{\"id\":\"other\"}");
                        assertEquals(NOT_FOUND, code(d.call("export.resize", "{\"id\":\"slow\",\"size\":\"16M\"}")));
                        assertEquals(NOT_FOUND, code(d.call("export.set_limits", "{\"id\":\"slow\",\"iops_limit\":10}")));
                        assertEquals(NOT_FOUND, code(d.call("export.remove", "{\"id\":\"slow\"}")));
                        assertEquals(ALREADY_EXISTS, code(d.call("export.add", slowSpec)), "its id stays reserved");
                        assertEquals(ALREADY_EXISTS, code(d.call("export.add", DaemonRig.json(Map.of("id", "x",
                                "image", DaemonRig.image(dir, "x.img").toString(), "socket", slow.toString())))), "its socket stays reserved");
                        assertEquals(IN_USE, code(d.call("iothread.remove", "{\"id\":\"t0\"}")), "its I/O thread stays in use");
                    });
                    assertFalse(removal.isDone(), "the remove was still waiting for the stalled drain: " + (removal.isDone() ? removal.get() : ""));
                } finally {
                    new ProcessBuilder("kill", "-CONT", Long.toString(server.pid())).start().waitFor();
                }
                Map<String, Object> removed = removal.get(GUARD.toSeconds(), TimeUnit.SECONDS);
                assertEquals(Map.of("id", "slow", "removed", true, "frontend_disconnected", true), removed.get("result"), removed.toString());
                assertEquals(0, q.status(1), "the read held by the stopped server completed before the close");
            }
            // Free again: the id and socket can be used anew, the I/O thread removed.
            d.result("export.add", slowSpec);
            d.result("export.remove", "{\"id\":\"slow\"}");
            d.result("iothread.remove", "{\"id\":\"t0\"}");
        } finally {
            server.destroyForcibly();
        }
    }

    private static String statsText(DaemonRig d) {
        try {
            return String.valueOf(d.result("export.stats", "{\"id\":\"slow\"}"));
        } catch (IOException e) {
            return e.toString();
        }
    }

    @SuppressWarnings("unchecked")
    private static long inFlight(DaemonRig d, String id) throws IOException {
        Map<String, Object> stats = (Map<String, Object>) d.result("export.stats", "{\"id\":\"" + id + "\"}");
        return ((Number) ((List<Map<String, Object>>) stats.get("queues")).get(0).get("in_flight")).longValue();
    }
}
