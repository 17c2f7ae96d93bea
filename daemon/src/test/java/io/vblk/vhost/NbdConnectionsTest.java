package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code nbd_connections} ({@code vblk serve --nbd-connections}): an NBD disk's I/O thread opens
 * that many connections when the server allows several, and its requests really travel over all
 * of them. nbdkit's log filter names the connection of every request it served, so the test
 * counts the connections that carried reads and writes, not what the daemon says it opened.
 */
class NbdConnectionsTest {
    private static final Pattern IO_LINE = Pattern.compile("connection=(\\d+) (Read|Write) ");

    @TempDir
    Path dir;

    /** nbdkit's memory plugin behind its log filter; {@code multiConn} false puts the multi-conn filter in to forbid several. */
    private Process nbdkit(Path sock, Path log, boolean multiConn) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=log"));
        if (!multiConn) {
            cmd.add("--filter=multi-conn");
        }
        cmd.addAll(List.of("memory", "8M", "logfile=" + log));
        if (!multiConn) {
            cmd.add("multi-conn-mode=disable");
        }
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(dir.resolve(sock.getFileName() + ".out").toFile()).start();
        DaemonRig.awaitListening(sock, "nbdkit");
        return p;
    }

    private static Set<String> connectionsThatCarriedIo(Path log) throws Exception {
        Set<String> ids = new TreeSet<>();
        Matcher m = IO_LINE.matcher(Files.readString(log));
        while (m.find()) {
            ids.add(m.group(1));
        }
        return ids;
    }

    @Test
    void theDisksRequestsTravelOverEveryConnectionAsked() throws Exception {
        Path sock = dir.resolve("k.nbd");
        Path log = dir.resolve("k.log");
        Process server = nbdkit(sock, log, true);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Path vq = dir.resolve("v.sock");
            d.result("export.add", DaemonRig.json(Map.of("id", "n", "image", "nbd+unix:///?socket=" + sock,
                    "socket", vq.toString(), "nbd_connections", 3)));
            DaemonTest.verifiedIo(vq, 12, 7);
            d.result("export.remove", "{\"id\":\"n\"}");
        } finally {
            io.vblk.testkit.QemuTools.stop(server);
        }
        assertEquals(3, connectionsThatCarriedIo(log).size(), "connections that carried I/O: " + connectionsThatCarriedIo(log));
    }

    @Test
    void oneConnectionWhenTheServerForbidsSeveral() throws Exception {
        Path sock = dir.resolve("s.nbd");
        Path log = dir.resolve("s.log");
        Process server = nbdkit(sock, log, false);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Path vq = dir.resolve("v.sock");
            d.result("export.add", DaemonRig.json(Map.of("id", "n", "image", "nbd+unix:///?socket=" + sock,
                    "socket", vq.toString(), "nbd_connections", 4)));
            DaemonTest.verifiedIo(vq, 8, 3);
            d.result("export.remove", "{\"id\":\"n\"}");
        } finally {
            io.vblk.testkit.QemuTools.stop(server);
        }
        assertEquals(1, connectionsThatCarriedIo(log).size());
    }

    @Test
    void nbdConnectionsIsRefusedForADiskThatIsNotNbd() throws Exception {
        Path img = dir.resolve("f.img");
        Files.write(img, new byte[1 << 20]);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "f", "image", img.toString(),
                    "socket", dir.resolve("f.sock").toString(), "nbd_connections", 2))));
            assertTrue(String.valueOf(e.get("message")).contains("nbd_connections"), String.valueOf(e));
            e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "g", "image", "nbd+unix:///?socket=/nonexistent",
                    "socket", dir.resolve("g.sock").toString(), "nbd_connections", 17))));
            assertTrue(String.valueOf(e.get("message")).contains("nbd_connections"), String.valueOf(e));
        }
    }
}
