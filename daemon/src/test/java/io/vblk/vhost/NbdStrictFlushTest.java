package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.QemuTools;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * {@code nbd_strict_flush} ({@code vblk serve --nbd-strict-flush}), an export's own NBD strict
 * flushes where only the JVM property {@code -Dvblk.nbd.strictFlush} (the process-wide default,
 * off in this JVM) set them. A guest writes through an export on nbdkit with a write-back cache
 * (its cache filter), the server is killed (its cache is gone) and comes back: with the option
 * the guest's next FLUSH fails with IOERR, since the write it covers is lost; without it (the
 * default) it succeeds, as QEMU's client does. The option is saved by {@code --persist} and
 * served again after a restart.
 */
class NbdStrictFlushTest {
    private static final byte VIRTIO_BLK_S_OK = 0;
    private static final byte VIRTIO_BLK_S_IOERR = 1;

    @TempDir
    Path dir;

    private Process cachingServer(Path img, Path sock) throws Exception {
        Files.deleteIfExists(sock);
        Process p = new ProcessBuilder(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=cache", "file",
                img.toString(), "cache=writeback")).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("nbdkit.out").toFile())).start();
        DaemonRig.awaitListening(sock, "nbdkit");
        return p;
    }

    /** The status of the guest's FLUSH after its acknowledged write died with the server's cache. */
    private byte flushAfterTheServerLostAWrite(Map<String, Object> extra) throws Exception {
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(8 << 20);
        }
        Path sock = dir.resolve("k.nbd");
        Process[] server = {cachingServer(img, sock)};
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            Path vq = dir.resolve("v.sock");
            Map<String, Object> params = new LinkedHashMap<>(Map.of("id", "n", "image", "nbd+unix:///?socket=" + sock,
                    "socket", vq.toString(), "retry_timeout_ms", 20_000));
            params.putAll(extra);
            d.result("export.add", DaemonRig.json(params));
            byte status;
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(vq), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                q.write(2048, BlkQueue.pattern(2048, 4096, 3)); // acknowledged into the server's cache
                server[0].destroyForcibly().waitFor(); // the server crashes: its write-back cache is lost
                server[0] = cachingServer(img, sock);
                status = q.roundTrip(BlkQueue.T_FLUSH, 0, 0, 0, false);
                qemu.stop(q);
            }
            d.result("export.remove", "{\"id\":\"n\"}");
            return status;
        } finally {
            QemuTools.stop(server[0]);
        }
    }

    @Test
    void withTheOptionTheGuestsFlushFailsAfterTheServerLostAWrite() throws Exception {
        assumeTrue(QemuTools.installed("nbdkit"));
        assertEquals(VIRTIO_BLK_S_IOERR, flushAfterTheServerLostAWrite(Map.of("nbd_strict_flush", true)));
    }

    @Test
    void byDefaultTheGuestsFlushIsTrustedAsQemusClientDoes() throws Exception {
        assumeTrue(QemuTools.installed("nbdkit"));
        assertEquals(VIRTIO_BLK_S_OK, flushAfterTheServerLostAWrite(Map.of()));
    }

    @Test
    @SuppressWarnings("unchecked")
    void theOptionIsPersistedAndServedAgainAfterARestart() throws Exception {
        assumeTrue(QemuTools.installed("nbdkit"));
        Path sock = dir.resolve("m.nbd");
        Process server = DaemonRig.nbdkitMemory(dir, sock);
        Path config = dir.resolve("vblk.json");
        try {
            Object listed;
            try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist")) {
                d.result("export.add", DaemonRig.json(Map.of("id", "n", "image", "nbd+unix:///?socket=" + sock,
                        "socket", dir.resolve("n.sock").toString(), "nbd_strict_flush", true)));
                listed = d.result("export.list", null);
                assertEquals(true, ((List<Map<String, Object>>) listed).get(0).get("nbd_strict_flush"), listed.toString());
                Map<String, Object> saved = ((List<Map<String, Object>>) ((Map<String, Object>) JSON.std.anyFrom(
                        Files.readString(config))).get("exports")).get(0);
                assertEquals(true, saved.get("nbd_strict_flush"), saved.toString());
            }
            try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist")) {
                assertEquals(listed, d.result("export.list", null));
                DaemonTest.verifiedIo(dir.resolve("n.sock"), 4, 5);
            }
        } finally {
            QemuTools.stop(server);
        }
    }

    @Test
    void theOptionIsRefusedForADiskThatIsNotNbd() throws Exception {
        Path img = dir.resolve("f.img");
        Files.write(img, new byte[1 << 20]);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            for (Object value : new Object[] {true, false}) {
                Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "f",
                        "image", img.toString(), "socket", dir.resolve("f.sock").toString(), "nbd_strict_flush", value))));
                assertTrue(String.valueOf(e.get("message")).contains("nbd_strict_flush applies to nbd:// images only"),
                        String.valueOf(e));
            }
            Map<String, Object> e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "g",
                    "image", "null:1M", "socket", dir.resolve("g.sock").toString(), "nbd_strict_flush", true))));
            assertTrue(String.valueOf(e.get("message")).contains("nbd_strict_flush"), String.valueOf(e));
            e = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "h", "image", "nbd+unix:///?socket=/x",
                    "socket", dir.resolve("h.sock").toString(), "nbd_strict_flush", "yes"))));
            assertTrue(String.valueOf(e.get("message")).contains("nbd_strict_flush"), String.valueOf(e));
        }
    }
}
