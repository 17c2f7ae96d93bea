package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
 * A qcow2 export on a shared I/O thread is resized while its frontend's queue runs: the device's
 * queues pause, the driver is lent to the RPC thread for the durable metadata update, and the
 * queues resume. The same running queue then reads what it wrote before and writes past the old
 * end, another export on the thread serves throughout, and qemu-img finds the image consistent
 * with the new size.
 */
class SharedThreadQcow2ResizeTest {
    @TempDir
    Path dir;

    private static String run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), String.join(" ", cmd) + ": " + out);
        return out;
    }

    @Test
    void aRunningQueueOnASharedThreadSurvivesAQcow2Resize() throws Exception {
        Path img = dir.resolve("q.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", img.toString(), "4M");
        Path qs = dir.resolve("q.sock");
        Path good = dir.resolve("good.sock");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("iothread.add", "{\"id\":\"t0\"}");
            d.result("export.add", DaemonRig.exportOnT0(dir, "good", good));
            d.result("export.add", DaemonRig.json(Map.of("id", "q", "image", img.toString(), "format", "qcow2",
                    "socket", qs.toString(), "iothreads", List.of("t0"))));
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(qs), g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                byte[] before = BlkQueue.pattern(100, 4096, 7);
                q.write(100, before);
                d.result("export.resize", "{\"id\":\"q\",\"size\":\"8M\"}");
                DaemonTest.verifiedIo(good, 2, 3);
                assertArrayEquals(before, q.read(100, 4096), "written before the resize");
                byte[] past = BlkQueue.pattern(12_000, 4096, 9); // beyond the old 8192 sectors
                q.write(12_000, past);
                assertArrayEquals(past, q.read(12_000, 4096));
                qemu.stop(q);
            }
            d.result("export.remove", "{\"id\":\"q\"}");
        }
        run("qemu-img", "check", "-q", img.toString());
        String info = run("qemu-img", "info", "--output=json", img.toString());
        assertTrue(info.contains("\"virtual-size\": 8388608"), info);
    }
}
