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
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/** {@code vblk ctl} and {@code vblk stat} against a running daemon. */
class CtlTest {
    @TempDir
    Path dir;

    record Result(int status, String out, String err) {
    }

    private static Result run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = Main.run(args, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8),
                false);
        return new Result(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @Test
    @SuppressWarnings("unchecked")
    void ctlCallsEveryKindOfMethodAndStatShowsTheTraffic() throws Exception {
        Path control = dir.resolve("c.sock");
        Path img = dir.resolve("a.img");
        Files.write(img, new byte[4 << 20]);
        Path sock = dir.resolve("a.sock");
        try (DaemonRig d = new DaemonRig(control)) {
            String c = d.control.toString();
            Result add = run("ctl", "--control", c, "export.add", "--id", "a", "--image", img.toString(), "--socket",
                    sock.toString(), "--queues", "2", "--read-only");
            assertEquals(0, add.status(), add.toString());
            assertTrue(add.out().contains("queues: 2") && add.out().contains("read_only: true"), add.out());

            Result table = run("ctl", "--control", c, "export.list");
            assertEquals(0, table.status());
            String[] lines = table.out().split("\n");
            assertTrue(lines[0].startsWith("id") && lines[0].contains("socket") && lines[0].contains("queues"), table.out());
            assertTrue(lines[1].startsWith("a "), table.out());

            Result json = run("ctl", "--control", c, "export.list", "--json");
            List<Map<String, Object>> list = (List<Map<String, Object>>) JSON.std.anyFrom(json.out());
            assertEquals("a", list.get(0).get("id"));

            Result byJson = run("ctl", "--control", c, "export.set_limits", "--json", "{\"id\":\"a\",\"iops_limit\":500}");
            assertEquals(0, byJson.status(), byJson.toString());
            assertEquals(500, ((Number) ((Map<String, Object>) JSON.std.anyFrom(byJson.out())).get("iops_limit")).intValue());

            Result thread = run("ctl", "--control", c, "iothread.add", "--id", "t9", "--cpus", "0", "--wait", "blocking");
            assertEquals(0, thread.status(), thread.toString());
            assertTrue(thread.out().contains("cpus: [0]"), thread.out());
            Result onIt = run("ctl", "--control", c, "export.add", "--id", "n", "--image", "null:1M", "--socket",
                    dir.resolve("n.sock").toString(), "--iothreads", "t9");
            assertEquals(0, onIt.status(), onIt.toString());
            assertEquals(0, run("ctl", "--control", c, "export.remove", "--id", "n").status());
            assertEquals(0, run("ctl", "--control", c, "iothread.remove", "--id", "t9").status());

            Result error = run("ctl", "--control", c, "export.remove", "--id", "zz");
            assertEquals(1, error.status());
            // The daemon's "invalid params" (an unknown parameter) is a bad argument: 2, as the README's table says.
            Result unknown = run("ctl", "--control", c, "export.remove", "--id", "zz", "--bogus", "1");
            assertEquals(2, unknown.status(), unknown.toString());
            assertTrue(unknown.err().contains("-32602"), unknown.err());
            assertTrue(error.err().contains("no export 'zz'") && error.err().contains("-32000"), error.err());
            Result unreachable = run("ctl", "--control", dir.resolve("none.sock").toString(), "methods.list");
            assertEquals(1, unreachable.status());
            assertTrue(unreachable.err().contains("cannot reach the daemon"), unreachable.err());
            assertEquals(2, run("ctl", "--control", c).status(), "METHOD is required");

            Thread traffic = new Thread(() -> {
                try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(sock), g, 2)) {
                    BlkQueue q = g.queue(1, 128, true);
                    qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, g.queue(0, 128, true), q);
                    qemu.start(qemu.linuxFeatures(), true, null, q);
                    for (int i = 0; i < 300; i++) {
                        q.read(8L * (i % 64), 4096);
                    }
                    qemu.stop(q);
                }
            });
            traffic.start();
            Result stat = run("stat", "--control", c, "--interval", "0.3", "--count", "3");
            traffic.join(30_000);
            assertEquals(0, stat.status(), stat.toString());
            assertTrue(stat.out().contains("IOPS") && stat.out().contains("MB/s") && stat.out().contains("p99 us"), stat.out());
            assertTrue(stat.out().lines().filter(l -> l.startsWith("a ")).count() >= 6, "two queues, three reports: " + stat.out());
            Result statOne = run("stat", "--control", c, "--id", "zz", "--count", "1", "--interval", "0.1");
            assertEquals(2, statOne.status(), "an --id the daemon has no export of is a bad argument (rev17c)");
            assertEquals("", statOne.out(), "no header before the error");
        }
    }

    /**
     * ctl takes a relative file name against its own working directory (the daemon's may be
     * another: the VM would get another disk), and the daemon refuses one over its socket.
     */
    @Test
    @SuppressWarnings("unchecked")
    void relativeFileNamesAreTheCallersOrRefused() throws Exception {
        Path img = dir.resolve("r.img");
        Files.write(img, new byte[1 << 20]);
        Path here = Path.of("").toAbsolutePath();
        try (DaemonRig d = new DaemonRig(dir.resolve("c.sock"))) {
            String c = d.control.toString();
            Result add = run("ctl", "--control", c, "export.add", "--id", "r", "--image", here.relativize(img).toString(),
                    "--socket", here.relativize(dir.resolve("r.sock")).toString());
            assertEquals(0, add.status(), add.toString());
            Map<String, Object> listed = ((List<Map<String, Object>>) d.result("export.list", null)).get(0);
            assertEquals(img.toString(), Path.of((String) listed.get("image")).normalize().toString(), listed.toString());
            assertEquals(dir.resolve("r.sock").toString(), Path.of((String) listed.get("socket")).normalize().toString());

            Map<String, Object> raw = DaemonRig.error(d.call("export.add", "{\"id\":\"s\",\"image\":\"r.img\",\"socket\":\""
                    + dir.resolve("s.sock") + "\"}"));
            assertEquals(-32602, ((Number) raw.get("code")).intValue(), raw.toString());
            assertTrue(raw.get("message").toString().contains("image must be an absolute file name (the daemon's working"
                    + " directory is not the caller's), got 'r.img'"), raw.toString());
            Map<String, Object> sock = DaemonRig.error(d.call("export.add", "{\"id\":\"s\",\"image\":\"null:1M\","
                    + "\"socket\":\"s.sock\"}"));
            assertTrue(sock.get("message").toString().contains("socket must be an absolute file name"), sock.toString());
        }
    }

    /** A --config file's relative file names are the file's directory's, whatever the daemon's working directory. */
    @Test
    @SuppressWarnings("unchecked")
    void configRelativeFileNamesAreTheFilesDirectorys() throws Exception {
        Path sub = Files.createDirectories(dir.resolve("etc"));
        Files.write(sub.resolve("k.img"), new byte[1 << 20]);
        Path conf = sub.resolve("vblk.json");
        Files.writeString(conf, "{\"exports\": [{\"id\": \"k\", \"image\": \"k.img\", \"socket\": \"k.sock\"}]}");
        try (DaemonRig d = new DaemonRig(dir.resolve("c.sock"), "--config", conf.toString())) {
            Map<String, Object> listed = ((List<Map<String, Object>>) d.result("export.list", null)).get(0);
            assertEquals(sub.resolve("k.img").toString(), listed.get("image"), listed.toString());
            assertTrue(Files.exists(sub.resolve("k.sock")), "socket beside the file");
        }
    }

    /** A socket file nothing listens on is named as likely stale; export.stats' nested latency is columns of the table. */
    @Test
    void staleSocketHintAndFlatStatsTable() throws Exception {
        Path stale = dir.resolve("stale.sock");
        try (java.nio.channels.ServerSocketChannel ch = java.nio.channels.ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
            ch.bind(java.net.UnixDomainSocketAddress.of(stale));
        }
        Result r = run("ctl", "--control", stale.toString(), "methods.list");
        assertEquals(1, r.status(), r.toString());
        assertTrue(r.err().contains("(no daemon is listening; stale socket file?)"), r.err());
        try (DaemonRig d = new DaemonRig(dir.resolve("c.sock"))) {
            d.result("export.add", "{\"id\":\"n\",\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("n.sock") + "\"}");
            Result stats = run("ctl", "--control", d.control.toString(), "export.stats", "--id", "n");
            assertEquals(0, stats.status(), stats.toString());
            assertTrue(stats.out().contains("latency.p99_us") && !stats.out().contains("{"), stats.out());
        }
    }
}
