package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Review rev11b: 100 export.add / export.remove cycles of a daemon, each with a frontend that maps its
 * memory, does I/O, and is either stopped cleanly or left connected mid-I/O when the export is
 * removed; exports on a shared I/O thread and with threads of their own. Descriptors, threads
 * and mappings of the JVM must come back to where they were after the warm-up cycles.
 */
class AddRemoveCycleLeakTest {
    @TempDir
    Path dir;

    private static long fds() throws Exception {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return s.count();
        }
    }

    private static long maps() throws Exception {
        return Files.readAllLines(Path.of("/proc/self/maps")).size();
    }

    private static long threads() {
        return Thread.getAllStackTraces().keySet().stream().filter(t -> t.isAlive() && t.getName().startsWith("vblk")
                && !t.getName().matches("vblk-(rpc|vhost)-\\d+")).count();
    }

    private void cycle(DaemonRig d, int i) throws Exception {
        Path sock = dir.resolve("c.sock");
        boolean shared = i % 2 == 0;
        String spec = shared ? DaemonRig.json(Map.of("id", "c", "image", dir.resolve("c.img").toString(), "socket", sock.toString(),
                "iothreads", List.of("t0"))) : DaemonRig.json(Map.of("id", "c", "image", dir.resolve("c.img").toString(),
                "socket", sock.toString()));
        d.result("export.add", spec);
        if (i % 4 < 2) {
            DaemonTest.verifiedIo(sock, 2, i);
            d.result("export.remove", "{\"id\":\"c\"}");
        } else {
            // Removed under a connected frontend with its ring running.
            try (TestGuest g = new TestGuest(); VhostUserFrontend f = VhostUserFrontend.connect(sock); QemuFlow qemu = new QemuFlow(f, g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                q.write(0, BlkQueue.pattern(0, 4096, i));
                d.result("export.remove", "{\"id\":\"c\",\"force\":true}"); // attached: forced
            }
        }
    }

    @Test
    void hundredCyclesLeakNoDescriptorThreadOrMapping() throws Exception {
        DaemonRig.image(dir, "c.img");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("iothread.add", "{\"id\":\"t0\"}");
            for (int i = 0; i < 12; i++) {
                cycle(d, i);
            }
            System.gc();
            Thread.sleep(200);
            long fds0 = fds();
            long maps0 = maps();
            long threads0 = threads();
            for (int i = 12; i < 112; i++) {
                cycle(d, i);
            }
            // Counted until they are back within the slack (up to 30 s), not after a fixed pause:
            // the counts are the JVM's, and on a loaded machine the last cycle's ending threads,
            // closing descriptors and unmapping (frontends' memory) may take longer. A leak of
            // 100 cycles never comes back.
            long fds1;
            long maps1;
            long threads1;
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(30);
            while (true) {
                System.gc();
                Thread.sleep(100);
                fds1 = fds();
                maps1 = maps();
                threads1 = threads();
                if (fds1 - fds0 < 10 && maps1 - maps0 < 20 && threads1 - threads0 < 2 || System.nanoTime() > deadline) {
                    break;
                }
            }
            String what = "after 100 add/remove cycles: descriptors " + fds0 + " -> " + fds1 + ", mappings " + maps0 + " -> " + maps1
                    + ", vblk threads " + threads0 + " -> " + threads1;
            System.out.println(what);
            assertTrue(fds1 - fds0 < 10, what);
            assertTrue(maps1 - maps0 < 20, what);
            assertTrue(threads1 - threads0 < 2, what);
        }
    }
}
