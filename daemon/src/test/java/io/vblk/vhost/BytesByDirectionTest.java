package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Session 17: the data plane kept one byte counter per queue, so an operator could not tell read
 * from write throughput ({@code vblk_disk_bytes_total} only). A frontend does reads, writes and a
 * discard of known sizes; the Prometheus scrape and {@code export.stats} show the bytes by
 * direction, and the old total is kept as it was (every type's bytes, the discarded range too).
 */
class BytesByDirectionTest {
    private static final int T_DISCARD = 11;
    private static final long WRITTEN = 3 * 8192 + 512;
    private static final long READ = 5 * 4096 + 1024;
    private static final long DISCARDED = 16 * 512;

    @TempDir
    Path dir;

    /** Three 8 KiB writes and one of 512 bytes, five 4 KiB reads and one of 1 KiB, a flush and a discard of 16 sectors. */
    private static void knownIo(Path socket) {
        try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(socket), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            for (int i = 0; i < 3; i++) {
                q.write(16L * i, BlkQueue.pattern(16L * i, 8192, i));
            }
            q.write(100, BlkQueue.pattern(100, 512, 9));
            for (int i = 0; i < 5; i++) {
                q.read(8L * i, 4096);
            }
            assertArrayEquals(BlkQueue.pattern(100, 512, 9), java.util.Arrays.copyOf(q.read(100, 1024), 512));
            q.flush();
            // One discard segment: sector, number of sectors, flags (virtio-blk 5.2.6).
            long seg = q.dataGpa;
            UnsafeApi.putLong(q.host(seg), 200L);
            UnsafeApi.putInt(q.host(seg) + 8, (int) (DISCARDED / 512));
            UnsafeApi.putInt(q.host(seg) + 12, 0);
            q.roundTrip(T_DISCARD, 0, seg, 16, false); // counted when popped, whatever its status
            qemu.stop(q);
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    void readAndWrittenBytesAreCountedApart() throws Exception {
        Path control = dir.resolve("control.sock");
        Path sock = dir.resolve("a.sock");
        Path image = dir.resolve("a.img");
        Files.write(image, new byte[4 << 20]);
        try (DaemonRig d = new DaemonRig(control, "--metrics", "127.0.0.1:0")) {
            d.result("export.add", DaemonRig.json(Map.of("id", "a", "image", image.toString(), "socket", sock.toString())));
            knownIo(sock);
            long read = READ;
            Map<String, Object> q0 = ((List<Map<String, Object>>) ((Map<String, Object>) d.result("export.stats",
                    "{\"id\":\"a\"}")).get("queues")).get(0);
            assertEquals(read, ((Number) q0.get("read_bytes")).longValue(), q0.toString());
            assertEquals(WRITTEN, ((Number) q0.get("write_bytes")).longValue(), q0.toString());
            assertEquals(read + WRITTEN + DISCARDED, ((Number) q0.get("bytes")).longValue(), "the old total, as it was: " + q0);

            Matcher m = Pattern.compile("metrics on (http://\\S+/metrics)").matcher(d.stdout());
            assertTrue(m.find(), d.stdout());
            String body = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(m.group(1))).build(),
                    HttpResponse.BodyHandlers.ofString()).body();
            assertTrue(body.contains("# TYPE vblk_disk_read_bytes_total counter"), body);
            assertTrue(body.contains("vblk_disk_read_bytes_total{export=\"a\",queue=\"0\"} " + (double) read), body);
            assertTrue(body.contains("vblk_disk_written_bytes_total{export=\"a\",queue=\"0\"} " + (double) WRITTEN), body);
            assertTrue(body.contains("vblk_disk_bytes_total{export=\"a\",queue=\"0\"} " + (double) (read + WRITTEN + DISCARDED)),
                    body);
        }
    }
}
