package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Five exports whose back end (one NBD server, then stopped with SIGSTOP) holds a read in flight
 * while their frontends ask GET_VRING_BASE: five drains that cannot finish. Each holds a vhost
 * handler thread; with the old fixed pool of four they held all of them, and another export's new
 * frontend got no answer at all. Now: the other export connects and does verified I/O meanwhile,
 * no frontend is answered early (the answer would lose the read in a migration), the stuck drains
 * show in export.stats (stalled_control_calls) and the log, export.remove of a stuck export answers
 * after its deadline (while the back end still holds the reads) and its frontend's connection
 * closes unanswered, and once the server resumes the other four drains finish and are answered,
 * their reads completed. (The NBD client itself fails a request after 30 s without a reply and
 * 30 s of retries; the server resumes well before that.)
 * The guards are failure guards against a stalled control plane, not speed measurements.
 */
class StuckDrainsTest {
    private static final Duration LIVENESS = Duration.ofSeconds(90);
    private static final int STUCK = 5;

    @TempDir
    Path dir;

    @Test
    void stuckDrainsStallNoOtherExport() throws Exception {
        Path nbd = dir.resolve("nbd.sock");
        Process server = DaemonRig.nbdkitMemory(dir, nbd);
        Path control = dir.resolve("control.sock");
        Path good = dir.resolve("good.sock");
        List<TestGuest> guests = new ArrayList<>();
        List<VhostUserFrontend> frontends = new ArrayList<>();
        List<QemuFlow> flows = new ArrayList<>();
        List<BlkQueue> queues = new ArrayList<>();
        System.setProperty(VhostUserServer.CLOSE_WAIT_MS, "2000");
        try (DaemonRig d = new DaemonRig(control)) {
            DaemonRig.awaitListening(nbd, "nbdkit");
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("export.add", DaemonRig.exportOnT0(dir, "good", good));
            for (int i = 0; i < STUCK; i++) {
                d.result("export.add", DaemonRig.json(Map.of("id", "s" + i, "image", "nbd+unix:///?socket=" + nbd,
                        "socket", dir.resolve("s" + i + ".sock").toString(), "iothreads", List.of("t0"))));
                TestGuest g = new TestGuest();
                guests.add(g);
                VhostUserFrontend f = VhostUserFrontend.connect(dir.resolve("s" + i + ".sock"));
                frontends.add(f);
                QemuFlow qemu = new QemuFlow(f, g, 1);
                flows.add(qemu);
                BlkQueue q = g.queue(0, 128, true);
                queues.add(q);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                q.write(0, BlkQueue.pattern(0, 4096, 7)); // warm: the connection to the server works
            }
            DaemonRig.stopProcess(server.pid());
            try {
                for (int i = 0; i < STUCK; i++) {
                    BlkQueue q = queues.get(i);
                    q.add(0 /* VIRTIO_BLK_T_IN */, 8, q.dataGpa, 4096, true);
                    q.publish();
                    String id = "s" + i;
                    // Popped (else GET_VRING_BASE would stop the ring before it, with nothing to drain).
                    assertTimeoutPreemptively(LIVENESS, () -> {
                        while (inFlight(d, id) != 1) {
                            Thread.sleep(5);
                        }
                    });
                    frontends.get(i).send(Request.GET_VRING_BASE, VhostUserFrontend.VERSION, VhostUserFrontend.state(0, 0));
                }
                // Every stuck export's drain holds a handler; the other export is served regardless.
                assertTimeoutPreemptively(LIVENESS, () -> {
                    while (handlersInDrain() < STUCK) {
                        Thread.sleep(10);
                    }
                    DaemonTest.verifiedIo(good, 10, 1);
                    assertEquals(1 + STUCK, ((List<?>) d.result("export.list", null)).size());
                });
                // Visible: each stuck drain is counted once it has waited 10 s, and logged.
                assertTimeoutPreemptively(LIVENESS, () -> {
                    for (int i = 0; i < STUCK; i++) {
                        while (stalled(d, "s" + i) != 1) {
                            Thread.sleep(50);
                        }
                    }
                });
                assertTrue(d.stderr().contains("stopping queue 0 (draining its requests): STALLED"), d.stderr());
                // Not answered early: nothing to read on any stuck frontend's connection.
                for (VhostUserFrontend f : frontends) {
                    f.replyTimeoutMs(200);
                    assertThrows(IllegalStateException.class, f::receive, "no reply (nor end) before the drain ended");
                    f.replyTimeoutMs(10_000);
                }
                // The stuck export s0 can be removed: the remove answers after its deadline, the
                // device closes undrained and the frontend's GET_VRING_BASE goes unanswered.
                assertTimeoutPreemptively(LIVENESS, () -> assertEquals(Map.of("id", "s0", "removed", true, "frontend_disconnected", true),
                        d.result("export.remove", "{\"id\":\"s0\",\"force\":true}"))); // attached: forced
                assertTimeoutPreemptively(LIVENESS, () -> assertNull(frontends.get(0).receive(),
                        "s0's connection closes with its GET_VRING_BASE unanswered"));
                assertTrue(d.stderr().contains("the device did not drain within 2000 ms"), d.stderr());
                // It answered while the back end still held the reads (not after the NBD client's
                // own request and retry timeouts, 30 s each, failed them): s1's drain still waits.
                assertEquals(1, stalled(d, "s1"), "the remove waited for the back end's own timeouts");
                assertTimeoutPreemptively(LIVENESS, () -> DaemonTest.verifiedIo(good, 5, 2));
            } finally {
                new ProcessBuilder("kill", "-CONT", Long.toString(server.pid())).start().waitFor();
            }
            // The server is back: the other drains end, and only now are they answered.
            for (int i = 1; i < STUCK; i++) {
                int n = i;
                assertTimeoutPreemptively(LIVENESS, () -> {
                    VhostUserFrontend.Reply base = frontends.get(n).receive();
                    assertEquals(Request.GET_VRING_BASE, base.request());
                });
                assertEquals(0, queues.get(i).status(1), "the read held by the stopped server completed");
                assertEquals(0, stalled(d, "s" + i));
            }
            DaemonTest.verifiedIo(good, 5, 3);
        } finally {
            System.clearProperty(VhostUserServer.CLOSE_WAIT_MS);
            for (QemuFlow q : flows) {
                q.close();
            }
            for (VhostUserFrontend f : frontends) {
                f.close();
            }
            for (TestGuest g : guests) {
                g.close();
            }
            server.destroyForcibly();
        }
    }

    /** The vhost handler threads inside a ring drain (their stacks pass through QueueControl). */
    private static int handlersInDrain() {
        int n = 0;
        for (Map.Entry<Thread, StackTraceElement[]> e : Thread.getAllStackTraces().entrySet()) {
            if (e.getKey().getName().startsWith("vblk-vhost-")) {
                for (StackTraceElement f : e.getValue()) {
                    if (f.getClassName().equals(QueueControl.class.getName())) {
                        n++;
                        break;
                    }
                }
            }
        }
        return n;
    }

    @SuppressWarnings("unchecked")
    private static long inFlight(DaemonRig d, String id) throws IOException {
        Map<String, Object> stats = (Map<String, Object>) d.result("export.stats", "{\"id\":\"" + id + "\"}");
        return ((Number) ((List<Map<String, Object>>) stats.get("queues")).get(0).get("in_flight")).longValue();
    }

    @SuppressWarnings("unchecked")
    private static long stalled(DaemonRig d, String id) throws IOException {
        Map<String, Object> stats = (Map<String, Object>) d.result("export.stats", "{\"id\":\"" + id + "\"}");
        return ((Number) stats.get("stalled_control_calls")).longValue();
    }
}
