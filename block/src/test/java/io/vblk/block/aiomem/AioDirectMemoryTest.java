package io.vblk.block.aiomem;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.JvmFlags;

/**
 * Every disk shares the JVM's direct-memory pool. File back ends took a little of it on first
 * use, on threads an OutOfMemoryError ended: a Linux AIO back end's helper thread (its first
 * offloaded flush or discard: every later flush then never completed), a thread-pool worker (its
 * first discard: every request dealt to it stranded), and an io_uring registration of guest
 * memory threw out of the I/O thread's command. Now the helper's range is taken at open, a
 * worker fails the one request with EIO and lives on, and a registration without memory is a
 * refusal (transfers go unregistered). Run in a JVM of its own with a 16 MiB pool
 * ({@link AioDirectMemoryHog}).
 */
class AioDirectMemoryTest {
    @TempDir
    Path dir;

    @Test
    void fileBackEndsFacingAFullDirectMemoryPoolFailOneRequestAndServeOn() throws Exception {
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(4 << 20);
        }
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-XX:MaxDirectMemorySize=16m", "-Xmx256m"));
        cmd.addAll(JvmFlags.list());
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), AioDirectMemoryHog.class.getName(), img.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.getInputStream().transferTo(out);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        String output = out.toString(StandardCharsets.UTF_8);
        System.out.println(output);
        assertTrue(output.contains("AIO READ 4096") && output.contains("THREADS READ 4096"), output);
        assertTrue(output.contains("direct memory full"), output);
        assertTrue(output.contains("AIO FLUSH 0"), "the AIO helper's first flush:\n" + output);
        assertTrue(output.lines().anyMatch(l -> l.equals("AIO DISCARD 0")), "the AIO helper's discard:\n" + output);
        assertTrue(output.lines().anyMatch(l -> l.matches("THREADS DISCARD -?\\d+") && !l.contains("NO COMPLETION")),
                "the worker's first discard completes (EIO or 0):\n" + output);
        assertTrue(output.lines().anyMatch(l -> l.matches("REGISTER -?\\d+")), "registration:\n" + output);
        assertTrue(output.contains("THREADS AFTER 0"), "the worker serves once memory is back:\n" + output);
        assertTrue(output.contains("AIO AFTER 0"), output);
        assertTrue(!output.contains("OutOfMemoryError"), output);
    }
}
