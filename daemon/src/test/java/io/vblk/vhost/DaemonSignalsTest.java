package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Review rev17c: how {@code vblk daemon} answers signals as an operator's service manager sends
 * them. SIGHUP (a terminal hang-up, a {@code systemctl reload} or {@code kill -HUP} out of habit)
 * ran the JVM's shutdown hooks: every export stopped with status 0, which a unit's
 * Restart=on-failure does not restart; it must be ignored. SIGTERM while the exports of the
 * configuration still open ended the JVM at once (status 143, every socket file left on disk):
 * the hook was installed only once the start was over; it must stop the start, drain what is
 * open and exit 0 with no socket file left.
 */
class DaemonSignalsTest {
    @TempDir
    Path dir;

    @Test
    void sighupIsIgnoredAndTheDaemonKeepsServing() throws Exception {
        Path control = dir.resolve("control.sock");
        Path config = dir.resolve("vblk.json");
        Files.writeString(config, "{\"exports\": [" + DaemonRig.json(Map.of("id", "a", "image", "null:1M",
                "socket", dir.resolve("a.sock").toString())) + "]}");
        Process p = start(control, config);
        try {
            waitFor(p, dir.resolve("out.txt"), "listening");
            assertEquals(0, new ProcessBuilder("kill", "-HUP", Long.toString(p.pid())).start().waitFor());
            if (hangupIgnoredHere()) {
                // Started under nohup (or any parent ignoring SIGHUP): the child inherits SIG_IGN,
                // the JVM leaves the signal alone and the kernel drops it, so no line comes; the
                // daemon must still be alive and serving after it.
                Thread.sleep(1000);
            } else {
                waitFor(p, dir.resolve("err.txt"), "SIGHUP ignored");
            }
            assertTrue(p.isAlive(), "alive after SIGHUP");
            try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                @SuppressWarnings("unchecked")
                List<Map<String, Object>> listed = (List<Map<String, Object>>) c.call("export.list", null).get("result");
                assertEquals(List.of("a"), listed.stream().map(x -> x.get("id")).toList());
            }
            assertTrue(Files.exists(dir.resolve("a.sock")), "the export still listens");
            p.destroy(); // SIGTERM
            assertTrue(p.waitFor(60, TimeUnit.SECONDS), "exited after SIGTERM");
            assertEquals(0, p.exitValue(), Files.readString(dir.resolve("err.txt")));
        } finally {
            p.destroyForcibly();
        }
    }

    @Test
    void sigtermDuringTheStartStopsItAndDrainsWhatIsOpen() throws Exception {
        Path control = dir.resolve("control.sock");
        Path config = dir.resolve("vblk.json");
        // 8 null disks open at once; 16 entries (as many as the start opens at once) then hold
        // every opener on a server that never greets; the 8 null disks after them wait.
        int held = 16;
        try (StalledNbdServer server = new StalledNbdServer()) {
            StringBuilder entries = new StringBuilder();
            for (int i = 0; i < 8; i++) {
                entries.append(entries.length() == 0 ? "" : ",").append(DaemonRig.json(Map.of("id", "d" + i,
                        "image", "null:1M", "socket", dir.resolve("d" + i + ".sock").toString())));
            }
            for (int i = 0; i < held; i++) {
                entries.append(',').append(DaemonRig.json(Map.of("id", "s" + i, "image", server.address(),
                        "socket", dir.resolve("s" + i + ".sock").toString(), "connect_timeout_ms", 600_000)));
            }
            for (int i = 0; i < 8; i++) {
                entries.append(',').append(DaemonRig.json(Map.of("id", "e" + i, "image", "null:1M",
                        "socket", dir.resolve("e" + i + ".sock").toString())));
            }
            Files.writeString(config, "{\"exports\": [" + entries + "]}");
            Process p = start(control, config);
            try {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60); // a hang guard
                while ((server.connections.get() < held || !Files.exists(dir.resolve("d7.sock")) || !Files.exists(control))
                        && p.isAlive() && System.nanoTime() < deadline) {
                    Thread.sleep(20);
                }
                assertEquals(held, server.connections.get(), Files.readString(dir.resolve("err.txt")));
                assertTrue(Files.exists(dir.resolve("d0.sock")) && Files.exists(control), "the start is under way");
                p.destroy(); // SIGTERM, before READY
                waitFor(p, dir.resolve("err.txt"), "shutdown requested during the start");
                server.release(); // the held opens fail now
                assertTrue(p.waitFor(60, TimeUnit.SECONDS), "exited after SIGTERM");
                String err = Files.readString(dir.resolve("err.txt"));
                assertEquals(0, p.exitValue(), err);
                try (Stream<Path> files = Files.list(dir)) {
                    assertEquals(List.of(), files.filter(f -> f.toString().endsWith(".sock")).toList(), "no socket left: " + err);
                }
                assertFalse(err.contains("export e0: serving"), "no export opened after the signal: " + err);
                assertTrue(err.contains("export d0: serving"), err);
            } finally {
                server.release();
                p.destroyForcibly();
            }
        }
    }

    private Process start(Path control, Path config) throws Exception {
        return new ProcessBuilder(ServeProcess.command(List.of(), "daemon", "--control", control.toString(),
                "--config", config.toString()))
                .redirectOutput(dir.resolve("out.txt").toFile()).redirectError(dir.resolve("err.txt").toFile()).start();
    }

    /** Whether this process ignores SIGHUP (bit 0 of SigIgn in /proc/self/status): its children inherit that. */
    private static boolean hangupIgnoredHere() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("SigIgn:")) {
                return (Long.parseUnsignedLong(line.substring(7).trim(), 16) & 1L) != 0;
            }
        }
        return false;
    }

    /** Waits (a 60 s hang guard) until {@code file} contains {@code text}; fails if {@code p} exits first. */
    private static void waitFor(Process p, Path file, String text) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline) {
            if (Files.readString(file).contains(text)) {
                return;
            }
            if (!p.isAlive()) {
                throw new AssertionError("exited with " + p.exitValue() + " before \"" + text + "\": "
                        + Files.readString(file.resolveSibling("err.txt")));
            }
            Thread.sleep(20);
        }
        throw new AssertionError("no \"" + text + "\" in " + file + " within 60 s");
    }
}
