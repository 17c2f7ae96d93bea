package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.vblk.daemon.Main;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.engine.BlkConfig;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Who may reach the disk (issue 7, item 5): the socket file's mode and group, the peer-uid filter
 * (SO_PEERCRED), and a read-only image really opened O_RDONLY. Peers of another uid are real
 * processes started through {@code setpriv}; the image descriptors are read from
 * {@code /proc/PID/fdinfo} of a real {@code vblk serve}.
 */
class AccessTest {
    /** The uid and gid of "nobody" on Debian. */
    private static final int NOBODY = 65534;
    /** A gid no group is named after, given as a number. */
    private static final int BARE_GID = 4242;

    @TempDir
    Path dir;

    // ---------------------------------------------------------------- command line

    private static CliTestResult run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = Main.run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8), false);
        return new CliTestResult(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    record CliTestResult(int status, String out, String err) {
    }

    private void bad(String expected, String... extra) {
        List<String> args = new ArrayList<>(List.of("serve", "--image", "null:1M", "--socket", dir.resolve("s.sock").toString()));
        args.addAll(List.of(extra));
        CliTestResult r = run(args.toArray(new String[0]));
        String what = String.join(" ", extra) + " -> " + r;
        assertEquals(2, r.status(), what);
        assertEquals(1, r.err().split("\n").length, what);
        assertTrue(r.err().contains(expected), "'" + expected + "' expected: " + what);
        assertFalse(r.err().contains("\tat "), what);
    }

    @Test
    void badAccessOptionsAreOneLineAndStatusTwo() {
        bad("--socket-mode expects an octal mode", "--socket-mode", "rw-rw----");
        bad("--socket-mode expects an octal mode", "--socket-mode", "0689");
        bad("--socket-mode must be 0 to 0777", "--socket-mode", "04660");
        bad("must keep read and write for the owner", "--socket-mode", "0460");
        bad("Missing required parameter for option '--socket-mode'", "--socket-mode");
        bad("--socket-group needs a group", "--socket-group", " ");
        bad("socket group not found: 'no-such-group-vblk'", "--socket-group", "no-such-group-vblk");
        bad("--allow-uids expects a number", "--allow-uid", "root");
        bad("--allow-uids expects a number", "--allow-uid", "0,,1000");
        bad("--allow-uids must be 0 to 4294967294", "--allow-uid", "-1");
        assertFalse(Files.exists(dir.resolve("s.sock")), "no socket was left behind");
    }

    @Test
    void helpDocumentsTheAccessOptions() {
        CliTestResult r = run("serve", "--help");
        assertEquals(0, r.status());
        for (String text : List.of("--socket-mode=OCTAL", "--socket-group=NAME|GID", "--allow-uid=UID[,UID...]",
                "SO_PEERCRED", "the server's own uid and root", "--read-only", "O_RDONLY", "0600")) {
            // picocli wraps the help to the terminal, even inside an option's synopsis
            // ("--allow-uid=UID" / "[,UID...]"): compare with all white space removed.
            assertTrue(r.out().replaceAll("\\s+", "").contains(text.replaceAll("\\s+", "")), text + " is documented");
        }
    }

    // ---------------------------------------------------------------- a real daemon

    /**
     * {@code vblk serve --read-only --socket-mode 0666 --socket-group 4242 --allow-uid 0,65534
     * --aio threads}: the socket has that mode and group; every descriptor the daemon holds on the
     * image (the back end's own and the thread pool's channel) is O_RDONLY after reads have gone
     * through; a write is IOERR and leaves the file as it was; a peer of uid 65534 is served.
     */
    @Test
    void aReadOnlyDaemonOpensTheImageReadOnlyAndHonoursModeGroupAndUids() throws Exception {
        Path image = dir.resolve("ro.img");
        byte[] content = new byte[1 << 20];
        new Random(7).nextBytes(content);
        Files.write(image, content);
        Path sock = dir.resolve("ro.sock");
        try (ServeProcess serve = ServeProcess.start(dir, sock, "--image", image.toString(), "--socket", sock.toString(),
                "--read-only", "--aio", "threads", "--socket-mode", "0666", "--socket-group", String.valueOf(BARE_GID),
                "--allow-uid", "0," + NOBODY, "--wait", "blocking")) {
            assertTrue(serve.servingLine.contains("read-only"), serve.servingLine);
            assertEquals(PosixFilePermissions.fromString("rw-rw-rw-"), Files.getPosixFilePermissions(sock, LinkOption.NOFOLLOW_LINKS));
            assertEquals(BARE_GID, Files.getAttribute(sock, "unix:gid", LinkOption.NOFOLLOW_LINKS));

            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                byte[] first = new byte[4096];
                System.arraycopy(content, 8 * 512, first, 0, 4096);
                assertArrayEquals(first, q.read(8, 4096), "reads are served");
                assertEquals(1, q.roundTrip(BlkQueue.T_OUT, 8, q.dataGpa, 4096, false), "a write is IOERR");

                List<Integer> flags = imageDescriptorFlags(serve.pid(), image);
                assertFalse(flags.isEmpty(), "the daemon holds the image open");
                for (int f : flags) {
                    assertEquals(0, f & 3, "O_ACCMODE of an image descriptor is O_RDONLY: flags 0" + Integer.toOctalString(f));
                }
                assertTrue(flags.size() >= 2, "the back end's descriptor and the thread pool's channel: " + flags);
                qemu.stop(q);
            }
            assertArrayEquals(content, Files.readAllBytes(image), "the image is unchanged");

            assumeSetpriv();
            assertEquals("reply", probeAs(NOBODY, sock), "uid " + NOBODY + " is allowed and served");
            assertEquals(0, serve.stop());
        }
    }

    /** The open flags of every descriptor of process {@code pid} that refers to {@code file}. */
    private static List<Integer> imageDescriptorFlags(long pid, Path file) throws IOException {
        Path real = file.toRealPath();
        List<Integer> flags = new ArrayList<>();
        try (var fds = Files.list(Path.of("/proc", Long.toString(pid), "fd"))) {
            for (Path fd : (Iterable<Path>) fds::iterator) {
                Path target;
                try {
                    target = Files.readSymbolicLink(fd);
                } catch (IOException e) {
                    continue; // closed meanwhile
                }
                if (!target.equals(real)) {
                    continue;
                }
                for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "fdinfo", fd.getFileName().toString()))) {
                    if (line.startsWith("flags:")) {
                        flags.add(Integer.parseInt(line.substring("flags:".length()).trim(), 8));
                    }
                }
            }
        }
        return flags;
    }

    // ---------------------------------------------------------------- the peer filter

    private VhostUserServer nullServer(Path sock, Log log, int... allowUids) {
        VhostUserServer.Builder b = VhostUserServer.builder(sock, BlkConfig.builder(64L << 20).build(),
                new BackendChoice(BackendKind.NULL, null, log)).log(log).socketMode(0666).name("access");
        if (allowUids.length > 0) {
            b.allowUids(allowUids);
        }
        return b.build();
    }

    /**
     * The default policy (own uid and root; these tests run as root): a peer of uid 65534 is
     * refused with one log line naming its pid and uid, and the next frontend, root's, is served
     * and does I/O.
     */
    @Test
    void byDefaultAnotherUidIsRefusedInOneLineAndTheNextFrontendIsServed() throws Exception {
        assumeTrue(Native.libc().getuid() == 0, "needs root to start a peer of another uid");
        assumeSetpriv();
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxr-xr-x"));
        Path sock = dir.resolve("default.sock");
        List<String> lines = new ArrayList<>();
        Log log = Log.to(line -> {
            synchronized (lines) {
                lines.add(line);
            }
        });
        try (VhostUserServer server = nullServer(sock, log)) {
            Thread serving = new Thread(server::serve, "access-serve");
            serving.start();
            assertEquals("closed", probeAs(NOBODY, sock));
            List<String> refusals = matching(lines, "refused a connection");
            assertEquals(1, refusals.size(), lines.toString());
            assertTrue(refusals.get(0).matches("refused a connection from pid \\d+, uid 65534: uid not allowed \\(allowed: 0\\)"),
                    refusals.get(0));
            assertTrue(matching(lines, "frontend").isEmpty(), "no session was started for it: " + lines);
            goodFrontendDoesIo(sock);
            assertEquals(1, matching(lines, "frontend 1 connected").size(), lines.toString());
        }
    }

    /** An explicit list without root: root's own connection is refused and closed at once. */
    @Test
    void anExplicitListRefusesEveryoneElseIncludingRoot() throws Exception {
        Path sock = dir.resolve("list.sock");
        List<String> lines = new ArrayList<>();
        Log log = Log.to(line -> {
            synchronized (lines) {
                lines.add(line);
            }
        });
        int self = Native.libc().getuid();
        try (VhostUserServer server = nullServer(sock, log, BARE_GID, BARE_GID + 1)) {
            Thread serving = new Thread(server::serve, "access-serve");
            serving.start();
            for (int i = 0; i < 3; i++) {
                try (VhostUserFrontend f = VhostUserFrontend.connect(sock)) {
                    try {
                        f.send(VhostUserFrontend.GET_FEATURES, VhostUserFrontend.VERSION, null);
                    } catch (IllegalStateException alreadyClosed) {
                        continue; // EPIPE: the server closed it before the request went out
                    }
                    assertTrue(f.closedByBackend(), "refused peer's connection closed");
                }
            }
            awaitLines(lines, "refused a connection", 3);
            assertEquals(3, matching(lines, "uid " + self + ": uid not allowed (allowed: 4242,4243)").size(), lines.toString());
            assertTrue(serving.isAlive());
        }
    }

    private static void goodFrontendDoesIo(Path sock) {
        try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sock), g, 1)) {
            BlkQueue q = g.queue(0, 64, true);
            qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            assertEquals(0, q.roundTrip(BlkQueue.T_OUT, 0, q.dataGpa, 4096, false));
            assertEquals(0, q.roundTrip(BlkQueue.T_IN, 0, q.dataGpa, 4096, true));
            qemu.stop(q);
        }
    }

    private static List<String> matching(List<String> lines, String text) {
        synchronized (lines) {
            return lines.stream().filter(l -> l.contains(text)).toList();
        }
    }

    private static void awaitLines(List<String> lines, String text, int count) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30); // a hang guard
        while (matching(lines, text).size() < count && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
    }

    // ---------------------------------------------------------------- a peer of another uid

    private static void assumeSetpriv() {
        assumeTrue(Native.libc().getuid() == 0, "needs root to start a peer of another uid");
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/setpriv")), "needs setpriv (util-linux) to start a peer of another uid");
    }

    /** Java source of the peer: sends GET_FEATURES, prints "reply" or "closed". */
    private static final String PROBE = String.join("\n",
            "import java.net.UnixDomainSocketAddress;",
            "import java.nio.ByteBuffer;",
            "import java.nio.ByteOrder;",
            "import java.nio.channels.SocketChannel;",
            "import java.nio.file.Path;",
            "public class PeerProbe {",
            "    public static void main(String[] a) {",
            "        try (SocketChannel ch = SocketChannel.open(UnixDomainSocketAddress.of(Path.of(a[0])))) {",
            "            ch.write(ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putInt(1).putInt(1).putInt(0).flip());",
            "            ByteBuffer r = ByteBuffer.allocate(20);",
            "            while (r.hasRemaining() && ch.read(r) >= 0) { }",
            "            System.out.println(r.hasRemaining() ? \"closed\" : \"reply\");",
            "        } catch (java.io.IOException e) {",
            "            System.out.println(\"closed\");",
            "        }",
            "    }",
            "}",
            "");

    /** Runs the probe as {@code uid} (and gid) against {@code sock} and returns what it printed. */
    private String probeAs(int uid, Path sock) throws IOException, InterruptedException {
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxr-xr-x"));
        Path source = dir.resolve("PeerProbe.java");
        Files.writeString(source, PROBE);
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder("/usr/bin/setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups",
                java, "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1", "-Xshare:auto", source.toString(), sock.toString())
                .redirectErrorStream(true).start();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("the probe did not finish");
        }
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        assertEquals(0, p.exitValue(), out);
        return out;
    }
}
