package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.QemuTools;

/**
 * Review rev11b: export.resize of a qcow2 export runs the qcow2 driver's resize as a command on the
 * export's I/O thread (BlockDevice.resizeDrivers -> Qcow2Driver.resize), and that resize is
 * synchronous: quiesce() polls up to 120 s for requests in flight, and the header and L1 writes
 * (NetworkHost.writeDurably) wait for the server's reply. On a SHARED I/O thread that wait is
 * inside one member's round, so while the qcow2 image's NBD server stalls every other export on
 * the thread stops serving (its rounds never run), and the RPC handler waits holding the daemon's
 * change lock, so no other export can be added or removed either. The design says "a member never
 * blocks inside its round" and "a misbehaving ... export never stalls another export on the same
 * thread". Here the good export is a local raw file on the same thread; it must keep doing
 * verified I/O while the resize of the stalled export waits. Guards are failure guards.
 */
class ResizeKeepsSharedThreadServingTest {
    private static final Duration GUARD = Duration.ofSeconds(20);

    @TempDir
    Path dir;

    private static void run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), String.join(" ", cmd) + ": " + out);
    }

    @Test
    void aResizeWaitingForAStalledServerStopsNoOtherExportOnTheThread() throws Exception {
        Path img = dir.resolve("q.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "4M");
        run("truncate", "-s", "+4M", img.toString());
        Path nbdSock = dir.resolve("q.nbd");
        Process nbd = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "-k", nbdSock.toString(), "-x", "q", "-t", "-e", "4",
                img.toString())).redirectErrorStream(true).redirectOutput(dir.resolve("nbd.log").toFile()).start();
        Path control = dir.resolve("control.sock");
        Path good = dir.resolve("good.sock");
        CompletableFuture<Map<String, Object>> resize = null;
        try (DaemonRig d = new DaemonRig(control)) {
            DaemonRig.awaitListening(nbdSock, "qemu-nbd");
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("export.add", DaemonRig.exportOnT0(dir, "good", good));
            d.result("export.add", DaemonRig.json(Map.of("id", "q", "image", "nbd+unix:///q?socket=" + nbdSock, "format", "qcow2",
                    "socket", dir.resolve("q.sock").toString(), "iothreads", List.of("t0"))));
            DaemonTest.verifiedIo(good, 3, 1);
            DaemonRig.stopProcess(nbd.pid());
            try {
                resize = CompletableFuture.supplyAsync(() -> {
                    try {
                        return d.call("export.resize", "{\"id\":\"q\",\"size\":\"8M\"}");
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                });
                awaitResizeWaiting(resize);
                assertTimeoutPreemptively(GUARD, () -> d.result("export.add", DaemonRig.exportSpec("other", DaemonRig.image(dir, "o.img"), dir.resolve("o.sock"), Map.of())),
                        "export.add of an unrelated export (threads of its own) waited for the stalled resize (change lock held)");
                assertTimeoutPreemptively(GUARD, () -> DaemonTest.verifiedIo(good, 5, 2),
                        "an export on the shared I/O thread stopped serving while another export's resize waited for its NBD server");
                // The export being resized is neither removed nor resized again meanwhile: a clear refusal, at once.
                Map<String, Object> removeError = assertTimeoutPreemptively(GUARD, () -> DaemonRig.error(d.call("export.remove",
                        "{\"id\":\"q\"}")));
                assertEquals(-32002, ((Number) removeError.get("code")).intValue(), removeError.toString());
                assertTrue(String.valueOf(removeError.get("message")).contains("being resized"), removeError.toString());
                Map<String, Object> resizeError = assertTimeoutPreemptively(GUARD, () -> DaemonRig.error(d.call("export.resize",
                        "{\"id\":\"q\",\"size\":\"12M\"}")));
                assertEquals(-32002, ((Number) resizeError.get("code")).intValue(), resizeError.toString());
            } finally {
                new ProcessBuilder("kill", "-CONT", Long.toString(nbd.pid())).start().waitFor();
            }
            if (resize != null) {
                Map<String, Object> resized = resize.get();
                assertTrue(resized.containsKey("result"), "the resize ends once the server answers: " + resized);
            }
        } finally {
            QemuTools.stop(nbd); // SIGKILL if SIGTERM does not end it: a bare waitFor() could hang the run
        }
    }

    /**
     * Waits (up to 60 s) until the resize is past the daemon's marking and waits in the drivers'
     * resize (Export.resizeDrivers on the RPC thread's stack), where the stalled server holds it.
     * A fixed pause here was a race: on a loaded machine the resize might not have been marked
     * yet, and the export.remove below, expected to be refused, would have removed the export.
     */
    private static void awaitResizeWaiting(CompletableFuture<Map<String, Object>> resize) throws InterruptedException {
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(60);
        while (true) {
            for (StackTraceElement[] stack : Thread.getAllStackTraces().values()) {
                for (StackTraceElement f : stack) {
                    if (f.getClassName().equals("io.vblk.daemon.Export") && f.getMethodName().equals("resizeDrivers")) {
                        return;
                    }
                }
            }
            if (resize.isDone() || System.nanoTime() > deadline) {
                throw new AssertionError("the resize never waited for the stalled server: "
                        + (resize.isDone() ? resize.join() : "not in Export.resizeDrivers after 60 s"));
            }
            Thread.sleep(10);
        }
    }
}
