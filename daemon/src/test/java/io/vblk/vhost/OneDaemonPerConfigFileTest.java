package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.daemon.Main;

/**
 * One daemon persists one file: a second {@code vblk daemon --config F --persist} is refused at
 * start, naming the daemon that persists F and its pid (in another JVM, or in this one), and
 * leaves F as that daemon wrote it; once that daemon is gone (shut down, or killed: the kernel
 * drops its lock) another may persist F.
 */
class OneDaemonPerConfigFileTest {
    @TempDir
    Path dir;

    /**
     * Runs {@code vblk daemon --control C --config F --persist} in this JVM; its status and
     * stderr once it returned. One that starts (says it listens) instead is shut down and fails the test.
     */
    private static Object[] start(Path control, Path config) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int[] status = {-1};
        Thread t = new Thread(() -> status[0] = Main.run(new String[] {"daemon", "--control", control.toString(), "--config",
                config.toString(), "--persist"}, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8), false), "second-daemon");
        t.start();
        long deadline = System.nanoTime() + 60_000_000_000L; // a hang guard
        while (t.isAlive() && !out.toString(StandardCharsets.UTF_8).contains("listening") && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        if (t.isAlive()) {
            try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                c.call("daemon.shutdown", null);
            }
            t.join(60_000);
            throw new AssertionError("a second daemon persisting " + config + " started: " + out.toString(StandardCharsets.UTF_8));
        }
        return new Object[] {status[0], err.toString(StandardCharsets.UTF_8)};
    }

    @SuppressWarnings("unchecked")
    private static List<Object> exportIds(Path config) throws Exception {
        Map<String, Object> doc = (Map<String, Object>) JSON.std.anyFrom(Files.readString(config));
        return ((List<Map<String, Object>>) doc.get("exports")).stream().map(e -> e.get("id")).map(Object.class::cast).toList();
    }

    @Test
    void aSecondDaemonInThisJvmIsRefusedNamingThePid() throws Exception {
        Path config = dir.resolve("vblk.json");
        try (DaemonRig first = new DaemonRig(dir.resolve("c1.sock"), "--config", config.toString(), "--persist")) {
            first.result("export.add", DaemonRig.json(Map.of("id", "a", "image", "null:1M", "socket", dir.resolve("a.sock").toString())));
            byte[] before = Files.readAllBytes(config);
            Object[] second = start(dir.resolve("c2.sock"), config);
            assertEquals(2, second[0], (String) second[1]);
            String err = (String) second[1];
            assertTrue(err.contains("persisted by another daemon") && err.contains("(pid " + ProcessHandle.current().pid() + ")"), err);
            assertTrue(!Files.exists(dir.resolve("c2.sock")), "the refused daemon never listened");
            assertEquals(new String(before, StandardCharsets.UTF_8), Files.readString(config));
            assertEquals(List.of("a"), exportIds(config));
        }
        // The first one shut down: its lock went with it.
        try (DaemonRig again = new DaemonRig(dir.resolve("c2.sock"), "--config", config.toString(), "--persist")) {
            assertEquals(1, ((List<?>) again.result("export.list", null)).size());
        }
    }

    @Test
    void aDaemonInAnotherProcessIsNamedAndItsDeathFreesTheFile() throws Exception {
        Path config = dir.resolve("vblk.json");
        Path control = dir.resolve("other.sock");
        Process p = new ProcessBuilder(ServeProcess.command(List.of(), "daemon", "--control", control.toString(), "--config",
                config.toString(), "--persist")).redirectErrorStream(true).redirectOutput(dir.resolve("daemon.log").toFile()).start();
        try {
            DaemonRig.awaitListening(control, "vblk daemon");
            Object[] second = start(dir.resolve("c2.sock"), config);
            assertEquals(2, second[0], (String) second[1]);
            String err = (String) second[1];
            assertTrue(err.contains("vblk (pid " + p.pid() + ")"), err);
        } finally {
            p.destroyForcibly(); // SIGKILL: no close, the kernel drops the lock with the process
            p.waitFor();
        }
        try (DaemonRig d = new DaemonRig(dir.resolve("c3.sock"), "--config", config.toString(), "--persist")) {
            assertEquals(List.of(), d.result("export.list", null));
        }
    }
}
