package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * The daemon serving a qcow2 image whose bytes qemu-nbd serves as a raw export
 * ({@code export.add} with {@code format: qcow2} and an {@code nbd+unix://} image), verified
 * I/O from a vhost-user frontend, an online resize through the qcow2 driver, and the refusal of
 * a resize of a raw NBD export; then {@code qemu-img check} of the file.
 */
class NetworkFormatTest {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    private static String run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), String.join(" ", cmd) + ": " + out);
        return out;
    }

    private Process serve(Path file, Path sock) throws Exception {
        Process p = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "-k", sock.toString(), "-x", "q", "-t", "-e", "4",
                file.toString())).redirectErrorStream(true).redirectOutput(dir.resolve(sock.getFileName() + ".log").toFile())
                .start();
        DaemonRig.awaitListening(sock, "qemu-nbd");
        return p;
    }

    @Test
    @SuppressWarnings("unchecked")
    void aQcow2ImageOnAnNbdExportServesAndGrowsOnline() throws Exception {
        Path img = dir.resolve("q.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "4M");
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x3d 1M 64k", img.toString());
        run("truncate", "-s", "+4M", img.toString()); // room for the clusters the guest allocates
        Path raw = dir.resolve("raw.img");
        run("truncate", "-s", "4M", raw.toString());
        Path nbdSock = dir.resolve("q.nbd");
        Path rawSock = dir.resolve("r.nbd");
        Process nbd = serve(img, nbdSock);
        Process rawNbd = serve(raw, rawSock);
        Path control = dir.resolve("control.sock");
        Path vq = dir.resolve("q.sock");
        try (DaemonRig d = new DaemonRig(control)) {
            d.result("export.add", DaemonRig.json(Map.of("id", "q", "image", "nbd+unix:///q?socket=" + nbdSock,
                    "format", "qcow2", "socket", vq.toString())));
            d.result("export.add", DaemonRig.json(Map.of("id", "r", "image", "nbd+unix:///q?socket=" + rawSock,
                    "socket", dir.resolve("r.sock").toString())));
            // Without VHOST_F_LOG_ALL, as a guest runs outside a migration: a stop with it on
            // hands the image over (IncomingNetworkExportTest), and an inactive image is not resized.
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(vq), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures() & ~LogProtocolTest.LOG_ALL, true, null, q);
                for (int i = 0; i < 10; i++) {
                    byte[] data = BlkQueue.pattern(8L * i, 4096, 5 + i);
                    q.write(8L * i, data);
                    assertArrayEquals(data, q.read(8L * i, 4096), "sector " + 8 * i);
                }
                qemu.stop(q);
            }
            Map<String, Object> resized = (Map<String, Object>) d.result("export.resize", "{\"id\":\"q\",\"size\":\"8M\"}");
            assertEquals(8 * MIB, ((Number) resized.get("size_bytes")).longValue());
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(vq), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                byte[] cfg = qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                assertEquals(8 * MIB / 512, ByteBuffer.wrap(cfg).order(ByteOrder.LITTLE_ENDIAN).getLong(0));
                qemu.start(qemu.linuxFeatures() & ~LogProtocolTest.LOG_ALL, true, null, q);
                byte[] data = BlkQueue.pattern(14_000, 4096, 21);
                q.write(14_000, data); // past the old 4 MiB end
                assertArrayEquals(data, q.read(14_000, 4096));
                byte[] old = q.read(2048, 4096); // 1 MiB: qemu-io's pattern
                for (byte b : old) {
                    assertEquals((byte) 0x3d, b);
                }
                qemu.stop(q);
            }
            Map<String, Object> refused = DaemonRig.error(d.call("export.resize", "{\"id\":\"r\",\"size\":\"8M\"}"));
            assertEquals(-32003, ((Number) refused.get("code")).longValue(), refused.toString());
            assertTrue(refused.get("message").toString().contains("the server owns the size"), refused.toString());
            d.result("export.remove", "{\"id\":\"q\"}");
        } finally {
            io.vblk.testkit.QemuTools.stop(nbd);
            io.vblk.testkit.QemuTools.stop(rawNbd);
        }
        run("qemu-img", "check", img.toString());
        assertTrue(run("qemu-img", "info", "--output=json", img.toString()).contains("\"virtual-size\": " + 8 * MIB));
        assertTrue(run("qemu-io", "-f", "qcow2", "-c", "read -P 0x3d 1M 64k", img.toString()).contains("read 65536"));
    }
}
