package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.NetworkDisk;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A qcow2 image on an NBD disk, closed cleanly after writes no guest FLUSH covered: its data and
 * metadata must be flushed on the server before the connection closes (QEMU's bdrv_close
 * flushes the qcow2 node and then its NBD child). Writes into clusters qemu-io allocated go in
 * place (no metadata, no flush of the driver's own); the close's last command before goodbye is
 * now a FLUSH, as nbdkit's log filter shows, where the server saw none. The image checks clean.
 */
class Qcow2NetworkCloseFlushTest {
    private static final Pattern COMMAND = Pattern.compile("connection=\\d+ (\\w+) id=");

    @TempDir
    Path dir;

    @Test
    void aCleanCloseFlushesTheServerBeforeGoodbye() throws Exception {
        assumeTrue(QemuTools.installed("nbdkit"));
        Path img = DriverRig.create(dir, "n.qcow2", "4M", "-o", "compat=1.1,cluster_size=65536");
        QemuTools.Run w = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", img.toString());
        assertEquals(0, w.code(), w.output());
        Path sock = dir.resolve("k.sock");
        Path log = dir.resolve("k.log");
        Process server = new ProcessBuilder(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=log", "file",
                img.toString(), "logfile=" + log)).redirectErrorStream(true)
                .redirectOutput(dir.resolve("nbdkit.out").toFile()).start();
        try {
            Qcow2NetworkTest.awaitListening(server, sock, dir.resolve("nbdkit.out"));
            try (Qcow2Driver d = Qcow2.open(NetworkDisk.open("nbd+unix:///?socket=" + sock, false), 8,
                    Qcow2Options.defaults())) {
                DriverRig rig = new DriverRig(d);
                NativeBuffer b = DriverRig.buffer(65536);
                b.buffer().setMemory(0, 65536, (byte) 0x22);
                assertEquals(65536, rig.one(rig.write(0, b, 65536)));
            }
            List<String> commands = awaitCommands(log);
            assertTrue(commands.contains("Write"), String.valueOf(commands));
            assertEquals("Flush", commands.get(commands.size() - 1),
                    "the image's writes flushed before the connection closed: " + commands);
        } finally {
            QemuTools.stop(server);
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "read -P 0x22 0 64k", "-c", "read -P 0x11 64k 960k",
                img.toString());
        assertEquals(0, r.code(), r.output());
        assertFalse(r.output().contains("Pattern verification failed"), r.output());
    }

    /** The commands of the last connection to close (the driver's; the disk's probe closed first). */
    private static List<String> awaitCommands(Path log) throws Exception {
        long deadline = System.currentTimeMillis() + 10_000;
        String text = "";
        while (System.currentTimeMillis() < deadline) {
            text = Files.exists(log) ? Files.readString(log) : "";
            if (text.split("Disconnect", -1).length - 1 >= connects(text)) {
                break;
            }
            Thread.sleep(20);
        }
        List<String> out = new ArrayList<>();
        Matcher m = COMMAND.matcher(text);
        while (m.find()) {
            out.add(m.group(1));
        }
        return out;
    }

    private static int connects(String text) {
        return Math.max(1, text.split(" Connect ", -1).length - 1);
    }
}
