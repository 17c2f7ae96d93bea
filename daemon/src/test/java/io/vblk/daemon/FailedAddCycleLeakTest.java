package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * Review rev11b: 100 cycles of iothread.add, an export.add that fails after its image and device were
 * opened (the socket cannot be bound: a directory of /proc), raw and qcow2 in turn, an export
 * that succeeds and is removed, and iothread.remove. Descriptors and threads come back.
 */
class FailedAddCycleLeakTest {
    @TempDir
    Path dir;

    private static long fds() throws Exception {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return s.count();
        }
    }

    private static long threads() {
        return Thread.getAllStackTraces().keySet().stream().filter(t -> t.isAlive() && t.getName().startsWith("vblk")
                && !t.getName().matches("vblk-(rpc|vhost)-\\d+")).count();
    }

    private void cycle(Daemon d, Path raw, Path qcow, int i) {
        d.call("iothread.add", Params.json(Map.of("id", "t")));
        Path image = i % 2 == 0 ? raw : qcow;
        String format = i % 2 == 0 ? "raw" : "qcow2";
        assertThrows(RuntimeException.class, () -> d.call("export.add", Params.json(Map.of("id", "bad", "image", image.toString(),
                "format", format, "socket", "/proc/self/bad.sock", "iothreads", List.of("t")))));
        d.call("export.add", Params.json(Map.of("id", "ok", "image", image.toString(), "format", format,
                "socket", dir.resolve("ok.sock").toString(), "iothreads", List.of("t"))));
        d.call("export.remove", Params.json(Map.of("id", "ok")));
        d.call("iothread.remove", Params.json(Map.of("id", "t")));
    }

    @Test
    void failedAddsAndIoThreadCyclesLeakNothing() throws Exception {
        Path raw = dir.resolve("r.img");
        Files.write(raw, new byte[1 << 20]);
        Path qcow = dir.resolve("q.qcow2");
        Process p = new ProcessBuilder("qemu-img", "create", "-q", "-f", "qcow2", qcow.toString(), "4M").inheritIO().start();
        assertTrue(p.waitFor() == 0);
        Daemon d = new Daemon(Log.to(line -> { }));
        try {
            for (int i = 0; i < 10; i++) {
                cycle(d, raw, qcow, i);
            }
            long fds0 = fds();
            long threads0 = threads();
            for (int i = 10; i < 110; i++) {
                cycle(d, raw, qcow, i);
            }
            // Counted until they are back within the slack (up to 30 s), not after a fixed pause:
            // the counts are the JVM's, and on a loaded machine the last cycle's ending threads
            // and closing descriptors may take longer. A leak of 100 cycles never comes back.
            long fds1 = fds();
            long threads1 = threads();
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(30);
            while ((fds1 - fds0 >= 10 || threads1 - threads0 >= 2) && System.nanoTime() < deadline) {
                Thread.sleep(50);
                fds1 = fds();
                threads1 = threads();
            }
            String what = "after 100 cycles: descriptors " + fds0 + " -> " + fds1 + ", vblk threads " + threads0 + " -> " + threads1;
            System.out.println(what);
            assertTrue(fds1 - fds0 < 10, what);
            assertTrue(threads1 - threads0 < 2, what);
        } finally {
            d.close();
        }
    }
}
