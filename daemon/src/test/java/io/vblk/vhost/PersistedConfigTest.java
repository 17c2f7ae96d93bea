package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.daemon.Main;

/**
 * {@code config.save} and {@code vblk daemon --persist} with real daemons, real images and real
 * files: every kind of change survives a restart from the file as it was while the daemon ran
 * (what a crash leaves), a refused change leaves the file untouched (same bytes, same inode), a
 * crashed write's leftover is never read and a write that cannot be done tears nothing, and
 * config.save's file starts a daemon that saves the same configuration.
 */
class PersistedConfigTest {
    @TempDir
    Path dir;

    private static final int IMAGE_BYTES = 4 << 20;

    private Path image(String name) throws IOException {
        Path p = dir.resolve(name);
        Files.write(p, new byte[IMAGE_BYTES]);
        return p;
    }

    private Path qcow2(String name) throws Exception {
        Path p = dir.resolve(name);
        Process q = new ProcessBuilder("qemu-img", "create", "-q", "-f", "qcow2", p.toString(), "4M").inheritIO().start();
        assertEquals(0, q.waitFor());
        return p;
    }

    private String add(String id, Object image, Object... more) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("image", image.toString());
        m.put("socket", dir.resolve(id + ".sock").toString());
        for (int i = 0; i < more.length; i += 2) {
            m.put((String) more[i], more[i + 1]);
        }
        return DaemonRig.json(m);
    }

    private DaemonRig persisting(Path config, String... more) throws InterruptedException {
        List<String> args = new ArrayList<>(List.of("--config", config.toString(), "--persist"));
        args.addAll(List.of(more));
        return new DaemonRig(dir.resolve("control.sock"), args.toArray(new String[0]));
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> read(Path file) throws IOException {
        return (Map<String, Object>) JSON.std.anyFrom(Files.readString(file));
    }

    /** iothread.list without what changes while it runs (busy fraction). */
    @SuppressWarnings("unchecked")
    private static List<Object> threads(DaemonRig d) throws IOException {
        List<Object> out = new ArrayList<>();
        for (Map<String, Object> t : (List<Map<String, Object>>) d.result("iothread.list", null)) {
            Map<String, Object> m = new LinkedHashMap<>(t);
            m.remove("busy_fraction");
            out.add(m);
        }
        return out;
    }

    private static Object ino(Path p) throws IOException {
        return Files.getAttribute(p, "unix:ino");
    }

    @Test
    void everyKindOfChangeSurvivesARestartFromTheFile() throws Exception {
        Path config = dir.resolve("vblk.json");
        Path crashed = dir.resolve("as-a-crash-left-it.json");
        Object exports;
        List<Object> threads;
        try (DaemonRig d = persisting(config)) {
            assertTrue(Files.exists(config), "a missing file is created at start");
            d.result("iothread.add", "{\"id\":\"t0\",\"wait\":\"blocking\"}");
            d.result("iothread.add", "{\"id\":\"gone\"}");
            d.result("export.add", add("a", image("a.img"), "iothreads", List.of("t0"), "queues", 2, "serial", "disk-a"));
            d.result("export.add", add("n", "null:1M", "socket_mode", "0660"));
            d.result("export.add", add("q", qcow2("q.qcow2"), "format", "qcow2", "incoming", true, "read_only", false));
            d.result("export.add", add("x", "null:1M"));
            d.result("export.remove", "{\"id\":\"x\"}");
            d.result("iothread.remove", "{\"id\":\"gone\"}");
            d.result("export.resize", "{\"id\":\"a\",\"size\":\"8M\"}");
            d.result("export.resize", "{\"id\":\"n\",\"size\":\"2M\"}");
            d.result("export.set_limits", "{\"id\":\"a\",\"iops_limit\":5000,\"bps_limit\":\"1M\"}");
            exports = d.result("export.list", null);
            threads = threads(d);
            Files.copy(config, crashed); // the file while the daemon runs: what a crash or power loss leaves
            assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(config));
        }
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", crashed.toString())) {
            assertEquals(exports, d.result("export.list", null));
            assertEquals(threads, threads(d));
        }
    }

    /** The daemon as its own JVM, killed with SIGKILL after its changes: a restart from the same command line brings them back. */
    @Test
    void aKilledDaemonComesBackWithItsDisks() throws Exception {
        Path config = dir.resolve("vblk.json");
        Path control = dir.resolve("control.sock");
        Process p = new ProcessBuilder(ServeProcess.command(List.of(), "daemon", "--control", control.toString(), "--config",
                config.toString(), "--persist")).redirectErrorStream(true).redirectOutput(dir.resolve("daemon.log").toFile()).start();
        Object exports;
        try {
            DaemonRig.awaitListening(control, "vblk daemon");
            try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                for (String[] call : List.of(new String[] {"iothread.add", "{\"id\":\"t0\"}"},
                        new String[] {"export.add", add("a", image("a.img"), "iothreads", List.of("t0"))},
                        new String[] {"export.add", add("n", "null:1M")},
                        new String[] {"export.resize", "{\"id\":\"n\",\"size\":\"3M\"}"},
                        new String[] {"export.set_limits", "{\"id\":\"a\",\"bps_limit\":\"2M\"}"})) {
                    Map<String, Object> r = c.call(call[0], call[1]);
                    assertTrue(r.containsKey("result"), call[0] + ": " + r);
                }
                exports = c.call("export.list", null).get("result");
            }
        } finally {
            p.destroyForcibly(); // SIGKILL: no shutdown, no last write
            p.waitFor();
        }
        try (DaemonRig d = persisting(config)) {
            assertEquals(exports, d.result("export.list", null), d.stderr());
        }
    }

    /**
     * The restart's window that made aKilledDaemonComesBackWithItsDisks flaky, made certain: the
     * disk's image is still locked by a ring no live process has (a killed daemon's io_uring,
     * which the kernel tears down after the reap). The restart says it waits for a dead process's
     * lock, and serves the disk once the kernel lets go, instead of keeping it failed.
     */
    @Test
    void aDiskADeadDaemonsRingStillLocksIsServedOnceTheKernelLetsGo() throws Exception {
        Path config = dir.resolve("vblk.json");
        Path control = dir.resolve("control.sock");
        Path image = image("a.img");
        Object exports;
        try (DaemonRig d = persisting(config)) {
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("export.add", add("a", image, "iothreads", List.of("t0")));
            exports = d.result("export.list", null);
        }
        io.vblk.testkit.RingHeldLock ring = io.vblk.testkit.RingHeldLock.hold(image);
        org.junit.jupiter.api.Assumptions.assumeTrue(ring != null, "io_uring refused here");
        Path log = dir.resolve("restart.log");
        // A ring closed in a live JVM took seconds to let go here: the wait's bound is raised past that.
        Process p = new ProcessBuilder(ServeProcess.command(List.of("env", "JAVA_TOOL_OPTIONS=-Dvblk.lock.deadHolderWaitMs=120000"),
                "daemon", "--control", control.toString(), "--config", config.toString(), "--persist"))
                .redirectErrorStream(true).redirectOutput(log.toFile()).start();
        try {
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(60); // a hang guard
            String text = "";
            while (!text.contains("locked by no live process") && !text.contains("listening") && p.isAlive()
                    && System.nanoTime() < deadline) {
                Thread.sleep(20);
                text = Files.readString(log);
            }
            assertTrue(text.contains("locked by no live process") && text.contains(image.toString()),
                    "the restart did not wait for the dead holder: " + text);
            ring.close(); // the kernel's teardown ends: the description and its locks go
            DaemonRig.awaitListening(control, "vblk daemon");
            try (DaemonRig.Client c = new DaemonRig.Client(control)) {
                assertEquals(exports, c.call("export.list", null).get("result"), Files.readString(log));
            }
        } finally {
            ring.close();
            p.destroyForcibly();
            p.waitFor();
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void refusedChangesLeaveTheFileUntouched() throws Exception {
        Path config = dir.resolve("vblk.json");
        try (DaemonRig d = persisting(config)) {
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("export.add", add("a", image("a.img"), "iothreads", List.of("t0")));
            byte[] before = Files.readAllBytes(config);
            Object inode = ino(config);
            List<String[]> refused = List.of(
                    new String[] {"export.add", add("b", dir.resolve("missing.img"))},
                    new String[] {"export.add", add("a", image("b.img"))},
                    new String[] {"export.add", add("c", image("c.img"), "iothreads", List.of("nope"))},
                    new String[] {"export.add", add("d", dir.resolve("a.img"))}, // a's image, written by a
                    new String[] {"export.add", add("e", "null:1M", "queues", 99)},
                    new String[] {"export.remove", "{\"id\":\"nope\"}"},
                    new String[] {"export.resize", "{\"id\":\"a\",\"size\":\"1M\"}"}, // a shrink without allow_shrink
                    new String[] {"export.set_limits", "{\"id\":\"nope\",\"iops_limit\":1}"},
                    new String[] {"iothread.add", "{\"id\":\"t0\"}"},
                    new String[] {"iothread.remove", "{\"id\":\"t0\"}"}); // in use
            for (String[] call : refused) {
                Map<String, Object> r = d.call(call[0], call[1]);
                assertTrue(r.containsKey("error"), call[0] + " " + call[1] + ": " + r);
                assertArrayEquals(before, Files.readAllBytes(config), call[0] + " " + call[1]);
                assertEquals(inode, ino(config), "not rewritten either: " + call[0] + " " + call[1]);
            }
            // A change that leaves the configuration as it is (a resize to the same size) writes nothing either.
            d.result("export.resize", "{\"id\":\"a\",\"size\":" + IMAGE_BYTES + "}");
            assertEquals(inode, ino(config));
            Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
            assertEquals(false, status.get("failing"), status.toString());
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void aCrashedWritesLeftoverIsNeverReadAndAFailedWriteTearsNothing() throws Exception {
        Path config = dir.resolve("vblk.json");
        Path tmp = dir.resolve(".vblk.json.tmp");
        try (DaemonRig d = persisting(config)) {
            d.result("export.add", add("a", "null:1M"));
            d.result("export.add", add("b", "null:1M"));
        }
        // A crash mid-write: the temporary file, half written, beside the whole old file.
        byte[] whole = Files.readAllBytes(config);
        Files.write(tmp, java.util.Arrays.copyOf(whole, whole.length / 2));
        try (DaemonRig d = persisting(config, "--metrics", "127.0.0.1:0")) {
            List<Map<String, Object>> list = (List<Map<String, Object>>) d.result("export.list", null);
            assertEquals(List.of("a", "b"), list.stream().map(m -> m.get("id")).toList());
            d.result("export.add", add("c", "null:1M"));
            assertFalse(Files.exists(tmp), "the leftover went with the next write");
            assertEquals(3, ((List<?>) read(config).get("exports")).size());

            // Writes that cannot be done (here: a directory where the temporary file goes; as
            // root no mode makes a directory read-only): the change stands, the answer says it
            // is not saved, the file keeps its bytes, config.status and the gauge show it.
            Files.createDirectories(tmp.resolve("blocker"));
            byte[] before = Files.readAllBytes(config);
            Map<String, Object> answer = (Map<String, Object>) d.result("export.add", add("d", "null:1M"));
            assertEquals("d", answer.get("id"));
            assertTrue(String.valueOf(answer.get("persist_error")).contains("cannot write " + config), answer.toString());
            assertArrayEquals(before, Files.readAllBytes(config));
            Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
            assertEquals(true, status.get("failing"), status.toString());
            assertEquals(config.toString(), status.get("persist"));
            assertTrue(metrics(d).contains("vblk_config_persist_failing 1.0"), metrics(d));
            assertTrue(d.stderr().contains("cannot write " + config), d.stderr());

            Files.delete(tmp.resolve("blocker"));
            Files.delete(tmp);
            answer = (Map<String, Object>) d.result("export.set_limits", "{\"id\":\"d\",\"iops_limit\":7}");
            assertNull(answer.get("persist_error"));
            List<Map<String, Object>> saved = (List<Map<String, Object>>) read(config).get("exports");
            assertEquals(List.of("a", "b", "c", "d"), saved.stream().map(m -> m.get("id")).toList());
            assertEquals(7, ((Number) saved.get(3).get("iops_limit")).intValue());
            assertEquals(false, ((Map<String, Object>) d.result("config.status", null)).get("failing"));
            // A scrape may answer with a body up to 1 s old (MetricsHttp shares one among a flood): asked again until fresh.
            String body = metrics(d);
            for (long deadline = System.nanoTime() + 30_000_000_000L; !body.contains("vblk_config_persist_failing 0.0")
                    && System.nanoTime() < deadline; body = metrics(d)) {
                Thread.sleep(100);
            }
            assertTrue(body.contains("vblk_config_persist_failing 0.0"), body);
        }
    }

    private static String metrics(DaemonRig d) throws Exception {
        Matcher m = Pattern.compile("metrics on (http://\\S+/metrics)").matcher(d.stdout());
        assertTrue(m.find(), d.stdout());
        return HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(m.group(1))).build(),
                HttpResponse.BodyHandlers.ofString()).body();
    }

    @Test
    @SuppressWarnings("unchecked")
    void configSaveWritesWhatStartsTheSameDaemon() throws Exception {
        Path saved = dir.resolve("saved.json");
        Map<String, Object> first;
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("iothread.add", "{\"id\":\"t0\",\"cpus\":[0],\"poll_ns\":2000}");
            d.result("export.add", add("a", image("a.img"), "iothreads", List.of("t0"), "cache", "writeback", "allow_uids",
                    List.of(0, 4294967294L)));
            d.result("export.add", add("n", "null:1G", "read_only", true, "bps_limit", "10M"));
            d.result("export.resize", "{\"id\":\"n\",\"size\":\"2G\"}");
            first = (Map<String, Object>) d.result("config.save", null);
            assertEquals(List.of("iothreads", "exports"), new ArrayList<>(first.keySet()));
            Map<String, Object> n = ((List<Map<String, Object>>) first.get("exports")).get(1);
            assertEquals("null:" + (2L << 30), n.get("image"));

            assertEquals(first, d.result("config.save", DaemonRig.json(Map.of("path", saved.toString()))));
            assertEquals(first, read(saved));
            assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(saved));
            assertFalse(Files.exists(dir.resolve(".saved.json.tmp")));

            // Refused: a relative path, a directory, a symlink, a FIFO; a missing directory fails the write.
            Path link = dir.resolve("link.json");
            Files.createSymbolicLink(link, saved);
            Path fifo = dir.resolve("fifo.json");
            assertEquals(0, new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor());
            for (String bad : List.of("relative.json", dir.toString(), link.toString(), fifo.toString())) {
                Map<String, Object> e = DaemonRig.error(d.call("config.save", DaemonRig.json(Map.of("path", bad))));
                assertEquals(-32602, ((Number) e.get("code")).intValue(), bad + ": " + e);
            }
            Map<String, Object> e = DaemonRig.error(d.call("config.save", DaemonRig.json(Map.of("path",
                    dir.resolve("no/such/dir.json").toString()))));
            assertTrue(e.get("message").toString().contains("cannot write"), e.toString());
            assertTrue(Files.isSymbolicLink(link) && Files.isDirectory(dir));

            // vblk ctl: the same call from the command line.
            Path byCtl = dir.resolve("by-ctl.json");
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            int status = Main.run(new String[] {"ctl", "--control", d.control.toString(), "config.save", "--path", byCtl.toString()},
                    new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(out, true, StandardCharsets.UTF_8), false);
            assertEquals(0, status, out.toString(StandardCharsets.UTF_8));
            assertEquals(first, read(byCtl));
        }
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", saved.toString())) {
            assertEquals(first, d.result("config.save", null));
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void concurrentChangesEndInTheLastState() throws Exception {
        Path config = dir.resolve("vblk.json");
        try (DaemonRig d = persisting(config)) {
            ExecutorService pool = Executors.newFixedThreadPool(8);
            try {
                List<Future<?>> done = new ArrayList<>();
                for (int c = 0; c < 8; c++) {
                    int client = c;
                    done.add(pool.submit(() -> {
                        for (int k = 0; k < 6; k++) {
                            String id = "e" + client + "-" + k;
                            d.result("export.add", add(id, "null:1M"));
                            d.result("export.set_limits", "{\"id\":\"" + id + "\",\"iops_limit\":" + (k + 1) + "}");
                            d.result("export.resize", "{\"id\":\"" + id + "\",\"size\":\"" + (k + 2) + "M\"}");
                            if (k % 2 == 0) {
                                d.result("export.remove", "{\"id\":\"" + id + "\"}");
                            }
                        }
                        return null;
                    }));
                }
                for (Future<?> f : done) {
                    f.get();
                }
            } finally {
                pool.shutdownNow();
            }
            Map<String, Object> now = (Map<String, Object>) d.result("config.save", null);
            assertEquals(now, read(config));
            assertEquals(24, ((List<?>) now.get("exports")).size());
            assertFalse(Files.exists(dir.resolve(".vblk.json.tmp")));
        }
    }

    /**
     * An NBD disk whose server exports read-only is served read-only, but saved as it was asked
     * for (read_only false): the server decides again at the restart, and may allow writes by then.
     */
    @Test
    @SuppressWarnings("unchecked")
    void aNetworkDiskIsSavedAsAskedNotAsItsServerMadeIt() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(Files.isExecutable(Path.of("/usr/bin/nbdkit")), "nbdkit is not installed");
        Path nbd = dir.resolve("nbd.sock");
        Process server = new ProcessBuilder("nbdkit", "-r", "-f", "-U", nbd.toString(), "memory", "8M")
                .redirectErrorStream(true).redirectOutput(dir.resolve("nbdkit.log").toFile()).start();
        Path config = dir.resolve("vblk.json");
        try {
            DaemonRig.awaitListening(nbd, "nbdkit");
            Object exports;
            try (DaemonRig d = persisting(config)) {
                d.result("export.add", add("net", "nbd+unix:///?socket=" + nbd, "nbd_connections", 2, "retry_timeout_ms", 1000));
                exports = d.result("export.list", null);
                assertEquals(true, ((List<Map<String, Object>>) exports).get(0).get("read_only"), exports.toString());
                Map<String, Object> saved = ((List<Map<String, Object>>) read(config).get("exports")).get(0);
                assertEquals(false, saved.get("read_only"), saved.toString());
                assertEquals(1000, ((Number) saved.get("retry_timeout_ms")).intValue());
            }
            try (DaemonRig d = persisting(config)) {
                assertEquals(exports, d.result("export.list", null));
            }
        } finally {
            server.destroy();
            server.waitFor();
        }
    }

    /**
     * Three persisted exports, the middle one's image gone (a restart after a host reboot): the
     * daemon starts and serves the other two, reports the failed one (config.status, the gauge),
     * and never drops it from the file; once the image is back, export.add of the same
     * parameters serves it at its place and clears the failure.
     */
    @Test
    @SuppressWarnings("unchecked")
    void aDiskThatCannotOpenAtStartIsKeptAndTheOthersServed() throws Exception {
        Path config = threeExportsMiddleGone();
        byte[] before = Files.readAllBytes(config);
        Map<String, Object> entryB = ((List<Map<String, Object>>) read(config).get("exports")).get(1);
        try (DaemonRig d = persisting(config, "--metrics", "127.0.0.1:0")) {
            assertEquals(List.of("a", "c"), ids(d.result("export.list", null)));
            assertArrayEquals(before, Files.readAllBytes(config), "the start keeps the failed entry");
            Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
            List<Map<String, Object>> failed = (List<Map<String, Object>>) status.get("failed_exports");
            assertEquals(List.of("b"), ids(failed), status.toString());
            assertTrue(failed.get(0).get("error").toString().contains("b.img"), status.toString());
            assertTrue(metrics(d).contains("vblk_config_entries_failed 1.0"), metrics(d));
            assertTrue(d.stderr().contains("export b failed at start"), d.stderr());
            assertTrue(DaemonRig.error(d.call("export.stats", "{\"id\":\"b\"}")).get("message").toString()
                    .contains("failed at start"));

            // Another change rewrites the file with b still in it, at its place, as it was.
            d.result("export.set_limits", "{\"id\":\"a\",\"iops_limit\":5000}");
            List<Map<String, Object>> saved = (List<Map<String, Object>>) read(config).get("exports");
            assertEquals(List.of("a", "b", "c"), ids(saved));
            assertEquals(entryB, saved.get(1));
            d.result("export.set_limits", "{\"id\":\"a\",\"iops_limit\":0}");
            assertArrayEquals(before, Files.readAllBytes(config));

            // Refused while the image is still gone: still failed, still in the file.
            assertTrue(d.call("export.add", DaemonRig.json(entryB)).containsKey("error"));
            assertArrayEquals(before, Files.readAllBytes(config));

            image("b.img");
            d.result("export.add", DaemonRig.json(entryB));
            assertEquals(List.of("a", "b", "c"), ids(d.result("export.list", null)));
            status = (Map<String, Object>) d.result("config.status", null);
            assertEquals(List.of(), status.get("failed_exports"), status.toString());
            assertArrayEquals(before, Files.readAllBytes(config));
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void removingAFailedEntryDropsItFromTheFile() throws Exception {
        Path config = threeExportsMiddleGone();
        try (DaemonRig d = persisting(config)) {
            Map<String, Object> answer = (Map<String, Object>) d.result("export.remove", "{\"id\":\"b\"}");
            assertEquals(true, answer.get("removed"));
            assertEquals(List.of("a", "c"), ids(read(config).get("exports")));
            Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
            assertEquals(List.of(), status.get("failed_exports"), status.toString());
            assertTrue(d.call("export.remove", "{\"id\":\"b\"}").containsKey("error"), "gone for good");
        }
        try (DaemonRig d = persisting(config)) {
            assertEquals(List.of("a", "c"), ids(d.result("export.list", null)));
        }
    }

    /**
     * rev13c: a failed entry opens first at the next restart, so its socket is not given to
     * another export meanwhile (which would then fail, and its VM reconnect to the failed
     * entry's disk): refused naming it, the file untouched.
     */
    @Test
    void aFailedEntrysSocketIsNotGivenToAnotherExport() throws Exception {
        Path config = threeExportsMiddleGone();
        byte[] before = Files.readAllBytes(config);
        try (DaemonRig d = persisting(config)) {
            Map<String, Object> other = new LinkedHashMap<>();
            other.put("id", "d");
            other.put("image", image("d.img").toString());
            other.put("socket", dir.resolve("b.sock").toString());
            String message = DaemonRig.error(d.call("export.add", DaemonRig.json(other))).get("message").toString();
            assertTrue(message.contains("'b'") && message.contains("failed at start"), message);
            assertEquals(List.of("a", "c"), ids(d.result("export.list", null)));
            assertArrayEquals(before, Files.readAllBytes(config));
        }
    }

    /** Without --persist the file is the operator's: an entry that cannot open stops the start, as before. */
    @Test
    void withoutPersistAnEntryThatCannotOpenStillStopsTheStart() throws Exception {
        Path config = threeExportsMiddleGone();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        // (Not c.sock: export c's socket; an export on the control socket is refused before any opens.)
        int status = Main.run(new String[] {"daemon", "--control", dir.resolve("ctl.sock").toString(), "--config", config.toString()},
                new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8), false);
        assertEquals(2, status, err.toString(StandardCharsets.UTF_8));
        assertTrue(err.toString(StandardCharsets.UTF_8).contains("exports[1]"), err.toString(StandardCharsets.UTF_8));
    }

    /**
     * A persisted I/O thread that cannot start (a CPU this host lacks): the export on it fails
     * naming it, the other export serves; once the thread is added as this host allows,
     * config.retry brings the export back.
     */
    @Test
    @SuppressWarnings("unchecked")
    void anExportOnAFailedIothreadNamesItAndConfigRetryBringsItBack() throws Exception {
        Path config = dir.resolve("vblk.json");
        Files.writeString(config, DaemonRig.json(Map.of(
                "iothreads", List.of(Map.of("id", "t9", "cpus", List.of(1000))),
                "exports", List.of(Map.of("id", "x", "image", image("x.img").toString(), "socket", dir.resolve("x.sock").toString(),
                        "iothreads", List.of("t9")), Map.of("id", "y", "image", "null:1M", "socket", dir.resolve("y.sock").toString())))));
        try (DaemonRig d = persisting(config, "--metrics", "127.0.0.1:0")) {
            assertEquals(List.of("y"), ids(d.result("export.list", null)));
            Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
            assertEquals(List.of("t9"), ids(status.get("failed_iothreads")), status.toString());
            Map<String, Object> x = ((List<Map<String, Object>>) status.get("failed_exports")).get(0);
            assertEquals("x", x.get("id"));
            assertTrue(x.get("error").toString().contains("I/O thread 't9' failed at start"), x.toString());
            assertTrue(metrics(d).contains("vblk_config_entries_failed 2.0"), metrics(d));
            assertEquals(List.of("t9"), ids(read(config).get("iothreads")));
            assertEquals(List.of("x", "y"), ids(read(config).get("exports")));

            d.result("iothread.add", "{\"id\":\"t9\"}");
            Map<String, Object> retried = (Map<String, Object>) d.result("config.retry", null);
            assertEquals(List.of("x"), retried.get("added"), retried.toString());
            assertEquals(List.of("x", "y"), ids(d.result("export.list", null)));
            assertEquals(List.of("x", "y"), ids(read(config).get("exports")));
            assertEquals(List.of(), ((Map<String, Object>) d.result("config.status", null)).get("failed_exports"));
        }
    }

    /** An NBD server not up yet when the daemon restarts: the disk is failed, the others served; config.retry once it is up serves it. */
    @Test
    @SuppressWarnings("unchecked")
    void aNetworkDiskWhoseServerIsNotUpYetIsServedByConfigRetry() throws Exception {
        Path nbd = dir.resolve("nbd.sock");
        Path config = dir.resolve("vblk.json");
        Process server = DaemonRig.nbdkitMemory(dir, nbd);
        try {
            DaemonRig.awaitListening(nbd, "nbdkit");
            try (DaemonRig d = persisting(config)) {
                d.result("export.add", add("net", "nbd+unix:///?socket=" + nbd, "retry_timeout_ms", 500));
                d.result("export.add", add("n", "null:1M"));
            }
        } finally {
            server.destroy();
            server.waitFor();
        }
        Files.deleteIfExists(nbd);
        byte[] before = Files.readAllBytes(config);
        Process[] up = {null};
        try (DaemonRig d = persisting(config)) {
            assertEquals(List.of("n"), ids(d.result("export.list", null)));
            assertEquals(List.of("net"), ids(((Map<String, Object>) d.result("config.status", null)).get("failed_exports")));
            assertArrayEquals(before, Files.readAllBytes(config));
            Map<String, Object> retried = (Map<String, Object>) d.result("config.retry", null);
            assertEquals(List.of(), retried.get("added"), "still down: " + retried);
            assertEquals(List.of("net"), ids(retried.get("failed_exports")));

            up[0] = DaemonRig.nbdkitMemory(dir, nbd);
            DaemonRig.awaitListening(nbd, "nbdkit");
            retried = (Map<String, Object>) d.result("config.retry", null);
            assertEquals(List.of("net"), retried.get("added"), retried.toString());
            assertEquals(List.of("net", "n"), ids(d.result("export.list", null)));
            assertArrayEquals(before, Files.readAllBytes(config));
        } finally {
            if (up[0] != null) { // after the daemon's shutdown: its disk drains against a live server
                up[0].destroy();
                up[0].waitFor();
            }
        }
    }

    /** A persisted file of exports a, b, c (raw images) written by a daemon, with b's image then deleted. */
    private Path threeExportsMiddleGone() throws Exception {
        Path config = dir.resolve("vblk.json");
        try (DaemonRig d = persisting(config)) {
            for (String id : List.of("a", "b", "c")) {
                d.result("export.add", add(id, image(id + ".img")));
            }
        }
        Files.delete(dir.resolve("b.img"));
        return config;
    }

    @SuppressWarnings("unchecked")
    private static List<Object> ids(Object list) {
        return ((List<Map<String, Object>>) list).stream().map(m -> m.get("id")).toList();
    }

    @Test
    void persistNeedsAConfigFile() {
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = Main.run(new String[] {"daemon", "--control", dir.resolve("c.sock").toString(), "--persist"},
                new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8), false);
        assertEquals(2, status);
        assertTrue(err.toString(StandardCharsets.UTF_8).contains("--persist needs --config"), err.toString(StandardCharsets.UTF_8));
        assertFalse(Files.exists(dir.resolve("c.sock")));
    }
}
