package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Every parameter of {@code export.add} that changes what a frontend sees, driven with a real
 * vhost-user frontend doing verified I/O (issue 12 items 2 and 8): format qcow2, queues and
 * queue_size over two I/O threads, read_only, serial, cache, aio, iops_limit; and images that
 * cannot be opened (empty, not a multiple of 512, qcow2 that is not, an NBD server that is not
 * there), each a clear error with no socket left behind while the other exports keep serving.
 */
class ExportParamsTest {
    private static final int MIB = 1 << 20;
    private static final int VIRTIO_BLK_F_RO = 5;
    private static final byte VIRTIO_BLK_S_IOERR = 1;

    @TempDir
    Path dir;

    private Path file(String name, long bytes) throws IOException {
        Path p = dir.resolve(name);
        try (RandomAccessFile f = new RandomAccessFile(p.toFile(), "rw")) {
            f.setLength(bytes);
        }
        return p;
    }

    private static String params(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return DaemonRig.json(m);
    }

    @Test
    @SuppressWarnings("unchecked")
    void everyAddParameterWithARealFrontend() throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/qemu-img")), "qemu-img is not installed (.ci/run installs it)");
        Path control = dir.resolve("control.sock");
        try (DaemonRig d = new DaemonRig(control)) {
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("iothread.add", "{\"id\":\"t1\"}");

            // Two queues of 256 on two I/O threads, linux-aio, page cache, serial, an IOPS limit from the start.
            Path mqSock = dir.resolve("mq.sock");
            Map<String, Object> mq = (Map<String, Object>) d.result("export.add", params("id", "mq", "image",
                    file("mq.img", 8 * MIB).toString(), "socket", mqSock.toString(), "queues", 2, "queue_size", 256,
                    "iothreads", List.of("t0", "t1"), "aio", "linux-aio", "cache", "writeback", "serial", "disk-mq",
                    "iops_limit", 100000));
            assertEquals("linux-aio", mq.get("backend"));
            assertEquals(100000L, ((Number) mq.get("iops_limit")).longValue());
            try (TestGuest g = new TestGuest(); VhostUserFrontend f = VhostUserFrontend.connect(mqSock); QemuFlow qemu = new QemuFlow(f, g, 2)) {
                BlkQueue q0 = g.queue(0, 256, true);
                BlkQueue q1 = g.queue(1, 256, true);
                byte[] cfg = qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q0, q1);
                assertEquals(2, java.nio.ByteBuffer.wrap(cfg).order(java.nio.ByteOrder.LITTLE_ENDIAN).getShort(34), "num_queues");
                qemu.start(qemu.linuxFeatures(), true, null, q0, q1);
                for (int i = 0; i < 8; i++) {
                    BlkQueue q = i % 2 == 0 ? q0 : q1;
                    byte[] data = BlkQueue.pattern(64L * i, 4096, i);
                    q.write(64L * i, data);
                    assertArrayEquals(data, (i % 2 == 0 ? q1 : q0).read(64L * i, 4096), "written on one queue, read on the other");
                }
                assertEquals("disk-mq", q0.id());
                qemu.stop(q0, q1);
            }
            List<Map<String, Object>> threads = (List<Map<String, Object>>) d.result("iothread.list", null);
            assertEquals(List.of(Map.of("id", "mq", "queues", List.of(0))), threads.get(0).get("exports"));
            assertEquals(List.of(Map.of("id", "mq", "queues", List.of(1))), threads.get(1).get("exports"));

            // Read-only: RO offered, reads see the image, a write fails and the image is unchanged.
            Path roImage = file("ro.img", 4 * MIB);
            byte[] content = BlkQueue.pattern(16, 4096, 3);
            try (RandomAccessFile f = new RandomAccessFile(roImage.toFile(), "rw")) {
                f.seek(16 * 512);
                f.write(content);
            }
            Path roSock = dir.resolve("ro.sock");
            d.result("export.add", params("id", "ro", "image", roImage.toString(), "socket", roSock.toString(), "read_only", true));
            try (TestGuest g = new TestGuest(); VhostUserFrontend f = VhostUserFrontend.connect(roSock); QemuFlow qemu = new QemuFlow(f, g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                assertTrue((qemu.linuxFeatures() & (1L << VIRTIO_BLK_F_RO)) != 0, "VIRTIO_BLK_F_RO offered");
                qemu.start(qemu.linuxFeatures(), true, null, q);
                assertArrayEquals(content, q.read(16, 4096));
                assertEquals(VIRTIO_BLK_S_IOERR, q.roundTrip(BlkQueue.T_OUT, 16, q.dataGpa, 4096, false));
                qemu.stop(q);
            }
            byte[] after = new byte[4096];
            try (RandomAccessFile f = new RandomAccessFile(roImage.toFile(), "r")) {
                f.seek(16 * 512);
                f.readFully(after);
            }
            assertArrayEquals(content, after, "a read-only export never writes");

            // qcow2: verified I/O through the format driver, and qemu-img finds the image clean afterwards.
            Path qcow = dir.resolve("disk.qcow2");
            assertEquals(0, new ProcessBuilder("qemu-img", "create", "-q", "-f", "qcow2", qcow.toString(), "16M")
                    .inheritIO().start().waitFor());
            Path qcSock = dir.resolve("qc.sock");
            Map<String, Object> qc = (Map<String, Object>) d.result("export.add", params("id", "qc", "image", qcow.toString(),
                    "socket", qcSock.toString(), "format", "qcow2", "cache", "writeback"));
            assertEquals(16L * MIB, ((Number) qc.get("size_bytes")).longValue());
            DaemonTest.verifiedIo(qcSock, 20, 4);
            d.result("export.remove", "{\"id\":\"qc\"}");
            Process check = new ProcessBuilder("qemu-img", "check", "-q", qcow.toString()).redirectErrorStream(true).start();
            String checkOut = new String(check.getInputStream().readAllBytes());
            assertEquals(0, check.waitFor(), "qemu-img check: " + checkOut);

            // Images that cannot be opened: a clear error each, no socket left, the others unaffected.
            Path bad = dir.resolve("bad.sock");
            List<String[]> cases = new ArrayList<>();
            cases.add(new String[] {params("id", "x", "image", file("empty.img", 0).toString(), "socket", bad.toString()), "empty"});
            cases.add(new String[] {params("id", "x", "image", file("odd.img", 1000).toString(), "socket", bad.toString()),
                "not a multiple of 512"});
            cases.add(new String[] {params("id", "x", "image", file("raw.img", MIB).toString(), "socket", bad.toString(),
                "format", "qcow2"), "qcow2"});
            cases.add(new String[] {params("id", "x", "image", "nbd+unix:///?socket=" + dir.resolve("nobody.sock"),
                "socket", bad.toString()), "cannot open nbd+unix"});
            for (String[] c : cases) {
                Map<String, Object> e = DaemonRig.error(d.call("export.add", c[0]));
                // A server that is not there is no bad parameter: -32005, worth a retry.
                int code = c[1].startsWith("cannot open nbd") ? -32005 : -32602;
                assertEquals(code, ((Number) e.get("code")).intValue(), e.toString());
                assertTrue(String.valueOf(e.get("message")).contains(c[1]), "'" + c[1] + "' expected in " + e);
                assertFalse(Files.exists(bad), "no socket left by a failed export.add: " + c[0]);
            }
            assertEquals(2, ((List<?>) d.result("export.list", null)).size());

            // Duplicate request ids on one connection: each request gets its own answer, in order.
            try (DaemonRig.Client c = d.client()) {
                String req = "{\"jsonrpc\":\"2.0\",\"method\":\"export.list\",\"id\":7}";
                String first = c.raw(req + "\n" + "{\"jsonrpc\":\"2.0\",\"method\":\"export.stats\",\"params\":{\"id\":\"ro\"},\"id\":7}");
                Map<String, Object> r1 = (Map<String, Object>) JSON.std.anyFrom(first);
                assertEquals(7, ((Number) r1.get("id")).intValue());
                assertTrue(r1.get("result") instanceof List<?>, first);
                Map<String, Object> r2 = (Map<String, Object>) JSON.std.anyFrom(c.readLine());
                assertEquals(7, ((Number) r2.get("id")).intValue());
                assertTrue(r2.get("result") instanceof Map<?, ?>, r2.toString());
                assertNotEquals(r1, r2);
            }
            DaemonTest.verifiedIo(mqSock, 5, 9);
        }
    }
}
