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
 * drops its lock) another may persist F. The refusal is status 1 (a lock held by another
 * process: a restart overlapping the old daemon's exit passes on retry), not a bad argument's 2.
 * Nor may another daemon's {@code config.save} write F.
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
            assertEquals(1, second[0], (String) second[1]); // a lock held elsewhere: it may pass later, not a bad argument
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

    /**
     * {@code config.save} of a daemon to the file another daemon persists is refused (IN_USE,
     * naming the holder and its lock file), and the file stays as its daemon wrote it: that
     * daemon would overwrite it at its next change, and a restart of it would serve the other
     * daemon's exports. Once that daemon is gone the file may be saved to.
     */
    @Test
    void configSaveToAnotherDaemonsPersistedFileIsRefused() throws Exception {
        Path config = dir.resolve("vblk.json");
        Path lock = dir.resolve(".vblk.json.lock");
        try (DaemonRig first = new DaemonRig(dir.resolve("c1.sock"), "--config", config.toString(), "--persist");
                DaemonRig second = new DaemonRig(dir.resolve("c2.sock"))) {
            first.result("export.add", DaemonRig.json(Map.of("id", "a", "image", "null:1M", "socket", dir.resolve("a.sock").toString())));
            second.result("export.add", DaemonRig.json(Map.of("id", "b", "image", "null:1M", "socket", dir.resolve("b.sock").toString())));
            byte[] before = Files.readAllBytes(config);
            for (boolean overwrite : new boolean[] {false, true}) {
                Map<String, Object> e = DaemonRig.error(second.call("config.save", DaemonRig.json(Map.of("path", config.toString(),
                        "overwrite", overwrite))));
                assertEquals(-32002, ((Number) e.get("code")).intValue(), e.toString());
                String m = (String) e.get("message");
                assertTrue(m.contains("persisted by another daemon") && m.contains("(pid " + ProcessHandle.current().pid() + ")")
                        && m.contains(lock.toString()), m);
            }
            assertEquals(new String(before, StandardCharsets.UTF_8), Files.readString(config));
            assertEquals(List.of("a"), exportIds(config));
            // Its own daemon saves to it, and another file is the second's to write.
            first.result("config.save", DaemonRig.json(Map.of("path", config.toString())));
            second.result("config.save", DaemonRig.json(Map.of("path", dir.resolve("other.json").toString())));
            assertEquals(List.of("b"), exportIds(dir.resolve("other.json")));
        }
        try (DaemonRig later = new DaemonRig(dir.resolve("c3.sock"))) { // the lock went with the first daemon
            later.result("config.save", DaemonRig.json(Map.of("path", config.toString())));
            assertEquals(List.of(), exportIds(config));
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
            assertEquals(1, second[0], (String) second[1]); // a lock held elsewhere: it may pass later, not a bad argument
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
