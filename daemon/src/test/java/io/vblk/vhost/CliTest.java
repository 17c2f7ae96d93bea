package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vblk.daemon.Main;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.UnixSocket;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.JvmFlags;
import io.vblk.testkit.QemuTools;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/** The {@code vblk} command line: bad arguments, help, and {@code serve} as a real process. */
class CliTest {
    @TempDir
    Path dir;

    record Result(int status, String out, String err) {
    }

    private static Result run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = assertTimeoutPreemptively(Duration.ofSeconds(20), () -> Main.run(args,
                new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8), false));
        return new Result(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    private Path image(String name, int bytes) throws IOException {
        Path p = dir.resolve(name);
        Files.write(p, new byte[bytes]);
        return p;
    }

    private static void assertOneLineError(Result r, String expected, String... args) {
        String what = String.join(" ", args) + " -> " + r;
        assertEquals(2, r.status(), what);
        assertEquals("", r.out(), what);
        String[] lines = r.err().split("\n");
        assertEquals(1, lines.length, what);
        assertTrue(lines[0].contains(expected), "'" + expected + "' expected in " + what);
        assertFalse(r.err().contains("Exception") || r.err().contains("\tat "), what);
    }

    private void bad(String expected, String... args) {
        assertOneLineError(run(args), expected, args);
    }

    @Test
    void everyBadArgumentIsOneLineAndStatusTwo() throws IOException {
        String img = image("ok.img", 1 << 20).toString();
        String sock = dir.resolve("s.sock").toString();
        bad("--image is required", "serve", "--socket", sock);
        bad("--socket is required", "serve", "--image", img);
        bad("image not found", "serve", "--image", dir.resolve("missing.img").toString(), "--socket", sock);
        bad("not a multiple of 512", "serve", "--image", image("odd.img", 1000).toString(), "--socket", sock);
        bad("empty", "serve", "--image", image("empty.img", 0).toString(), "--socket", sock);
        bad("is a directory", "serve", "--image", dir.toString(), "--socket", sock);
        bad("socket directory does not exist", "serve", "--image", img, "--socket", dir.resolve("no/s.sock").toString());
        bad("is not a socket", "serve", "--image", img, "--socket", img);
        bad("longer than", "serve", "--image", img, "--socket", dir.resolve("x".repeat(120)).toString());
        bad("--queues expects a number", "serve", "--image", img, "--socket", sock, "--queues", "two");
        bad("--queues must be 1 to 64", "serve", "--image", img, "--socket", sock, "--queues", "0");
        bad("--queues must be 1 to 64", "serve", "--image", img, "--socket", sock, "--queues=65");
        bad("Missing required parameter for option '--queues'", "serve", "--image", img, "--socket", sock, "--queues");
        bad("--iops-limit must be at least 0", "serve", "--image", img, "--socket", sock, "--iops-limit", "-1");
        bad("--iops-limit expects a number", "serve", "--image", img, "--socket", sock, "--iops-limit", "1e9");
        bad("--bps-limit expects a size", "serve", "--image", img, "--socket", sock, "--bps-limit", "12Q");
        bad("--aio", "serve", "--image", img, "--socket", sock, "--aio", "posix");
        bad("--cache must be none or writeback", "serve", "--image", img, "--socket", sock, "--cache", "unsafe");
        bad("--wait", "serve", "--image", img, "--socket", sock, "--wait", "forever");
        bad("--serial must be at most 20", "serve", "--image", img, "--socket", sock, "--serial", "x".repeat(21));
        bad("Unknown option: '--frobnicate'", "serve", "--image", img, "--socket", sock, "--frobnicate");
        bad("Unmatched argument at index 5: 'extra'", "serve", "--image", img, "--socket", sock, "extra");
        bad("--read-only' should be specified without 'yes' parameter", "serve", "--image", img, "--socket", sock, "--read-only=yes");
        bad("--image expects a size", "serve", "--image", "null:lots", "--socket", sock);
        bad("multiple of 512", "serve", "--image", "null:1000", "--socket", sock);
        bad("--image must be at least 1", "serve", "--image", "null:0", "--socket", sock);
        bad("needs an image file", "serve", "--image", "null:1G", "--socket", sock, "--aio", "linux-aio");
        Result down = run("serve", "--image", "nbds://127.0.0.1:1/x", "--socket", sock); // a server down: 1, not 2
        assertEquals(1, down.status(), down.toString());
        assertTrue(down.err().contains("Connection refused"), down.toString());
        bad("applies to nbds://", "serve", "--image", "nbd+unix:///x?socket=/s", "--tls-certificates", dir.toString(),
                "--socket", sock);
        bad("socket=PATH", "serve", "--image", "nbd+unix:///x", "--socket", sock);
        Result notUp = run("serve", "--image", "nbd+unix:///x?socket=" + dir.resolve("none.sock"), "--socket", sock);
        assertEquals(1, notUp.status(), "a server not up yet: " + notUp); // its socket not there yet
        assertTrue(notUp.err().contains("cannot open nbd+unix"), notUp.toString());
        bad("TLS parameters on a plain NBD URI", "serve", "--image", "nbd://127.0.0.1/x?tls-certificates=/etc",
                "--socket", sock);
        bad("expected rbd:POOL/IMAGE", "serve", "--image", "rbd:justapool", "--socket", sock);
        bad("Unmatched argument at index 0: 'frob'", "frob");
        assertFalse(Files.exists(Path.of(sock)), "no socket was created along the way");
    }

    @Test
    void helpDocumentsEveryOption() {
        Result r = run("serve", "--help");
        assertEquals(0, r.status());
        for (String option : List.of("--image=PATH|null:SIZE", "--image null:SIZE", "--socket", "--queues", "--read-only", "--serial",
                "--aio", "io_uring", "linux-aio", "threads", "null", "--cache", "none", "writeback", "--wait", "adaptive",
                "busy-spin", "yielding", "sleeping", "blocking", "--iops-limit", "--bps-limit", "--help", "0600")) {
            assertTrue(r.out().contains(option), option + " is documented");
        }
        assertEquals(0, run("--help").status());
        Result none = run();
        assertEquals(2, none.status());
        assertTrue(none.err().contains("serve"));
    }

    /** Waits (up to 60 s, the JVM starting on a loaded machine) for the first line the process writes to {@code file}. */
    private static String firstLine(Path file, Process p) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline && p.isAlive()) {
            String text = Files.readString(file);
            int nl = text.indexOf('\n');
            if (nl >= 0) {
                return text.substring(0, nl);
            }
            Thread.sleep(20);
        }
        return null;
    }

    /**
     * {@code serve} as its own JVM: a stale socket at the path is replaced, the socket is mode
     * 0600, a frontend does I/O on a null disk, SIGTERM drains and exits 0 and removes the socket.
     */
    @Test
    void serveRunsAsAProcessAndExitsCleanlyOnSigterm() throws Exception {
        Path sock = dir.resolve("serve.sock");
        UnixSocket.listen(sock, 1).close(); // a stale socket a dead server left behind
        assertTrue(SocketFile.isSocket(sock));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java));
        cmd.addAll(JvmFlags.list());
        cmd.addAll(List.of("-Xmx256m",
                "-cp", System.getProperty("java.class.path"), Main.class.getName(),
                "serve", "--image", "null:64M", "--socket", sock.toString(), "--wait", "blocking", "--serial", "proc"));
        Path stdout = dir.resolve("stdout.txt");
        Process p = new ProcessBuilder(cmd).redirectOutput(stdout.toFile()).redirectError(dir.resolve("stderr.txt").toFile())
                .start();
        try {
            String line = firstLine(stdout, p);
            assertTrue(line != null && line.startsWith("vblk: serving null:67108864 (67108864 bytes, read-write, null")
                    && line.endsWith(" on " + sock), String.valueOf(line));
            assertEquals(PosixFilePermissions.fromString("rw-------"), Files.getPosixFilePermissions(sock));

            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                assertEquals(0, q.roundTrip(BlkQueue.T_IN, 0, q.dataGpa, 4096, true));
                assertEquals("proc", q.id());
                assertEquals(2, qemu.stop(q)[0]);
            }
            // A second frontend, left connected: SIGTERM must end its session too.
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                assertEquals(0, q.roundTrip(BlkQueue.T_OUT, 8, q.dataGpa, 4096, false));
                p.destroy(); // SIGTERM
                // Up to 60 s (a hang guard): the drain and the JVM's exit on a loaded machine.
                assertTrue(p.waitFor(60, TimeUnit.SECONDS), "exited after SIGTERM");
            }
            assertEquals(0, p.exitValue());
            assertFalse(Files.exists(sock), "socket removed");
            String stderr = Files.readString(dir.resolve("stderr.txt"));
            assertFalse(stderr.contains("\tat "), stderr);
            assertTrue(stderr.contains("shutting down"), stderr);
            assertEquals(List.of(line), Files.readAllLines(stdout), "exactly one line on stdout");
        } finally {
            p.destroyForcibly();
        }
    }

    /**
     * A start that fails for a reason other than a bad argument (an image locked by another
     * process, a server down, an image that cannot be opened writable) is status 1, not 2, so a
     * service manager's RestartPreventExitStatus=2 tells a typo from a server not up yet; each
     * is one line, the address named once.
     */
    @Test
    void failuresThatAreNotBadArgumentsAreStatusOne() throws Exception {
        String sock = dir.resolve("s.sock").toString();
        Result refused = run("serve", "--image", "nbd://127.0.0.1:1/x", "--socket", sock, "--retry-timeout-ms", "0");
        assertEquals(1, refused.status(), refused.toString());
        assertTrue(refused.err().contains("Connection refused"), refused.err());
        assertEquals(1, refused.err().split("nbd://127.0.0.1:1/x", -1).length - 1, "the address once: " + refused.err());
        assertFalse(refused.err().contains("--help") || refused.err().contains("Exception"), refused.err());

        Path img = image("held.img", 1 << 20);
        Path other = dir.resolve("other.sock");
        try (ServeProcess holder = ServeProcess.start(dir, other, "--image", img.toString(), "--socket", other.toString())) {
            Result locked = run("serve", "--image", img.toString(), "--socket", sock);
            assertEquals(1, locked.status(), locked + " beside " + holder);
            assertTrue(locked.err().contains("lock"), locked.err());
        }

        Path ro = image("ro.img", 1 << 20);
        assertTrue(Files.isWritable(ro));
        boolean immutable = new ProcessBuilder("chattr", "+i", ro.toString()).start().waitFor() == 0;
        org.junit.jupiter.api.Assumptions.assumeTrue(immutable || !Files.isWritable(ro), "chattr +i not available");
        try {
            Result denied = run("serve", "--image", ro.toString(), "--socket", sock);
            assertEquals(1, denied.status(), denied.toString());
            assertTrue(denied.err().contains("is not writable by uid") && denied.err().contains("pass --read-only"), denied.err());
        } finally {
            new ProcessBuilder("chattr", "-i", ro.toString()).start().waitFor();
        }
    }

    /** {@code vblk daemon}'s result over JSON-RPC for {@code export.add params}: its error code (0: none) and message. */
    private static Object[] addOver(DaemonRig rig, java.util.Map<String, Object> params) throws IOException {
        java.util.Map<String, Object> r = rig.call("export.add", DaemonRig.json(params));
        if (!r.containsKey("error")) {
            rig.result("export.remove", DaemonRig.json(java.util.Map.of("id", params.get("id"))));
            return new Object[] {0, r.toString()};
        }
        java.util.Map<String, Object> e = DaemonRig.error(r);
        return new Object[] {((Number) e.get("code")).intValue(), String.valueOf(e.get("message"))};
    }

    private static void qcow2(String... args) {
        List<String> all = new ArrayList<>(List.of("create", "-q", "-f", "qcow2"));
        all.addAll(List.of(args));
        QemuTools.Run r = QemuTools.qemuImg(all.toArray(new String[0]));
        assertEquals(0, r.code(), r.output());
    }

    /**
     * A qcow2 image, or a backing file of it, locked by another process is status 1 and
     * JSON-RPC IN_USE (-32002), as a raw image is: the qcow2 driver takes the locks when the
     * device starts, and the lock's refusal (an IllegalArgumentException) read as a bad argument
     * (status 2, -32602) before. A missing backing file stays a bad argument (as a missing
     * image is), and an image that cannot be opened writable is status 1 with one clean line.
     */
    @Test
    void aQcow2ImageLockedElsewhereIsStatusOneAndInUse() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(QemuTools.installed("qemu-img"), "qemu-utils is not installed");
        Path a = dir.resolve("a.qcow2");
        qcow2(a.toString(), "1M");
        Path b = dir.resolve("b.qcow2");
        qcow2("-F", "qcow2", "-b", a.toString(), b.toString());
        Path gone = dir.resolve("gone.qcow2");
        qcow2(gone.toString(), "1M");
        Path c = dir.resolve("c.qcow2");
        qcow2("-F", "qcow2", "-b", gone.toString(), c.toString());
        Files.delete(gone);
        String sock = dir.resolve("s.sock").toString();

        bad("backing file " + gone + " of " + c + " does not exist", "serve", "--format", "qcow2", "--image", c.toString(),
                "--socket", sock);
        Path other = dir.resolve("other.sock");
        try (ServeProcess holder = ServeProcess.start(dir, other, "--format", "qcow2", "--image", a.toString(), "--socket",
                other.toString()); DaemonRig rig = new DaemonRig(dir.resolve("c.sock"))) {
            for (Path image : List.of(a, b)) { // the image itself, then an overlay whose backing file the holder writes
                Result locked = run("serve", "--format", "qcow2", "--image", image.toString(), "--socket", sock);
                assertEquals(1, locked.status(), image + ": " + locked);
                assertTrue(locked.err().contains("lock") && locked.err().contains("(pid " + holder.pid() + ")"), locked.err());
                assertEquals(1, locked.err().split("\n").length, locked.err());
                assertFalse(locked.err().contains("--help") || locked.err().contains("Exception"), locked.err());
                Object[] rpc = addOver(rig, java.util.Map.of("id", "q", "image", image.toString(), "format", "qcow2", "socket", sock));
                assertEquals(-32002, rpc[0], image + ": " + rpc[1]);
            }
            Object[] missing = addOver(rig, java.util.Map.of("id", "m", "image", c.toString(), "format", "qcow2", "socket", sock));
            assertEquals(-32602, missing[0], String.valueOf(missing[1]));
        }

        Path ro = dir.resolve("ro.qcow2");
        qcow2(ro.toString(), "1M");
        boolean immutable = new ProcessBuilder("chattr", "+i", ro.toString()).start().waitFor() == 0;
        org.junit.jupiter.api.Assumptions.assumeTrue(immutable || !Files.isWritable(ro), "chattr +i not available");
        try {
            Result denied = run("serve", "--format", "qcow2", "--image", ro.toString(), "--socket", sock);
            assertEquals(1, denied.status(), denied.toString());
            assertTrue(denied.err().contains("is not writable by uid") && denied.err().contains("pass --read-only"), denied.err());
            assertFalse(denied.err().contains("Exception"), denied.err());
        } finally {
            new ProcessBuilder("chattr", "-i", ro.toString()).start().waitFor();
        }
    }

    /**
     * A socket that cannot be listened on for a reason other than its name: another process
     * listens on the control socket (IN_USE), the directory refuses the bind (immutable here,
     * EPERM; EACCES for a user without write permission), the metrics port is taken: status 1
     * (-32005 over JSON-RPC for an export's socket), not the bad argument's 2 they were. A
     * missing directory stays a bad argument, for the control socket as for an export's.
     */
    @Test
    @SuppressWarnings("try") // the listener is held, never used
    void socketsThatCannotBeListenedOnAreStatusOneUnlessTheNameIsWrong() throws Exception {
        String sock = dir.resolve("s.sock").toString();
        Path live = dir.resolve("live.sock");
        try (UnixSocket listener = UnixSocket.listen(live, 1)) {
            for (String[] args : List.of(new String[] {"serve", "--image", "null:1M", "--socket", sock, "--control", live.toString()},
                    new String[] {"daemon", "--control", live.toString()})) {
                Result r = run(args);
                assertEquals(1, r.status(), String.join(" ", args) + " -> " + r);
                assertTrue(r.err().contains("another process listens on " + live), r.err());
            }
        }
        bad("--control: socket directory does not exist", "serve", "--image", "null:1M", "--socket", sock, "--control",
                dir.resolve("no/c.sock").toString());
        bad("--control: socket directory does not exist", "daemon", "--control", dir.resolve("no/c.sock").toString());

        try (java.net.ServerSocket taken = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            Result r = run("serve", "--image", "null:1M", "--socket", sock, "--metrics", "127.0.0.1:" + taken.getLocalPort());
            assertEquals(1, r.status(), r.toString());
            assertTrue(r.err().contains("--metrics: cannot listen on"), r.err());
        }

        Path locked = dir.resolve("locked");
        Files.createDirectory(locked);
        boolean immutable = new ProcessBuilder("chattr", "+i", locked.toString()).start().waitFor() == 0;
        org.junit.jupiter.api.Assumptions.assumeTrue(immutable, "chattr +i not available");
        try (DaemonRig rig = new DaemonRig(dir.resolve("c.sock"))) {
            String in = locked.resolve("x.sock").toString();
            for (String[] args : List.of(new String[] {"serve", "--image", "null:1M", "--socket", in},
                    new String[] {"serve", "--image", "null:1M", "--socket", sock, "--control", in},
                    new String[] {"daemon", "--control", in})) {
                Result r = run(args);
                assertEquals(1, r.status(), String.join(" ", args) + " -> " + r);
                assertTrue(r.err().contains("cannot listen on " + in) && r.err().contains("Operation not permitted"), r.err());
                assertEquals(1, r.err().lines().filter(l -> l.contains("cannot listen")).count(), r.err());
            }
            Object[] rpc = addOver(rig, java.util.Map.of("id", "x", "image", "null:1M", "socket", in));
            assertEquals(-32005, rpc[0], String.valueOf(rpc[1]));
        } finally {
            new ProcessBuilder("chattr", "-i", locked.toString()).start().waitFor();
        }
    }

    /**
     * An export on the daemon's own control socket is a bad argument told as such, before any
     * export opens: it was served, removed again, and blamed on "another process listens on" the
     * path (serve), or refused at run time as in use by another process (export.add).
     */
    @Test
    void anExportOnTheControlSocketIsABadArgument() throws Exception {
        String sock = dir.resolve("s.sock").toString();
        bad("socket " + sock + " is the daemon's control socket (--control)", "serve", "--image", "null:1M", "--socket", sock,
                "--control", sock);
        Path conf = dir.resolve("v.json");
        Files.writeString(conf, "{\"exports\": [{\"id\": \"a\", \"image\": \"null:1M\", \"socket\": \"" + sock + "\"}]}");
        bad("exports[0]: socket " + sock + " is the daemon's control socket (--control)", "daemon", "--control", sock, "--config",
                conf.toString());
        Path control = dir.resolve("c.sock");
        try (DaemonRig rig = new DaemonRig(control)) {
            Object[] rpc = addOver(rig, java.util.Map.of("id", "x", "image", "null:1M", "socket", control.toString()));
            assertEquals(-32602, rpc[0], String.valueOf(rpc[1]));
            assertTrue(String.valueOf(rpc[1]).contains("is the daemon's control socket"), String.valueOf(rpc[1]));
        }
    }

    /** A JSON syntax error in --config or ctl --json says where it is. */
    @Test
    void jsonSyntaxErrorsSayWhere() throws IOException {
        Path conf = dir.resolve("bad.json");
        Files.writeString(conf, "{\"exports\": [\n  {\"id\": \"a\",\n   \"image\" \"x\"}\n]}\n");
        bad("(line 3, column", "daemon", "--control", dir.resolve("c.sock").toString(), "--config", conf.toString());
        bad("(line 1, column", "ctl", "--control", dir.resolve("c.sock").toString(), "export.list", "--json", "{\"id\": }");
    }

    /**
     * Every entry of --config is checked before the first export opens: a later entry's mistake
     * is told before an earlier export is opened (here, before the first one's missing image).
     */
    @Test
    void aConfigIsCheckedWholeBeforeAnyExportOpens() throws IOException {
        Path conf = dir.resolve("dup.json");
        String a = "{\"id\": \"a\", \"image\": \"" + dir.resolve("missing.img") + "\", \"socket\": \"" + dir.resolve("a.sock") + "\"}";
        String b = "{\"id\": \"a\", \"image\": \"null:1M\", \"socket\": \"" + dir.resolve("b.sock") + "\"}";
        Files.writeString(conf, "{\"exports\": [" + a + ", " + b + "]}");
        bad("exports[1]: export 'a' already exists (exports[0])", "daemon", "--control", dir.resolve("c.sock").toString(),
                "--config", conf.toString());
        String c = "{\"id\": \"c\", \"image\": \"null:1M\", \"socket\": \"" + dir.resolve("a.sock") + "\"}";
        Files.writeString(conf, "{\"exports\": [" + a + ", " + c + "]}");
        bad("exports[1]: socket " + dir.resolve("a.sock") + " is the socket of exports[0]", "daemon", "--control",
                dir.resolve("c.sock").toString(), "--config", conf.toString());
        String t = "{\"id\": \"t\", \"image\": \"null:1M\", \"socket\": \"" + dir.resolve("t.sock") + "\", \"iothreads\": [\"x\"]}";
        Files.writeString(conf, "{\"exports\": [" + a + ", " + t + "]}");
        bad("exports[1]: iothreads: no I/O thread 'x'", "daemon", "--control", dir.resolve("c.sock").toString(),
                "--config", conf.toString());
        assertFalse(Files.exists(dir.resolve("c.sock")), "no control socket left");
    }
}
