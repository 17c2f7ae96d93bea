package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

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
 * Every disk of a daemon shares the JVM's direct-memory pool, and an NBD reconnect takes direct
 * memory (the socket's scratch, the handshake's buffer, a TLS session's buffers). A reconnect
 * while other disks held the pool used to throw OutOfMemoryError out of the reconnect thread,
 * which ended it: the disk never reconnected, and every request failed at its retry timeout.
 * Now such an attempt fails like a refused connect (retried with the backoff), and the disk
 * serves again once memory is back. Run in a JVM of its own with a 16 MiB pool
 * ({@link NbdDirectMemoryHog}).
 */
class NbdReconnectDirectMemoryTest {
    @TempDir
    Path dir;

    @Test
    void aReconnectWithoutDirectMemoryIsRetriedAndTheDiskServesOnceMemoryIsBack() throws Exception {
        assumeTrue(ServerProcess.available("qemu-nbd"), "qemu-nbd is not installed (.ci/run installs it)");
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(8 << 20);
        }
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-XX:MaxDirectMemorySize=16m", "-Xmx256m"));
        cmd.addAll(JvmFlags.list());
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), NbdDirectMemoryHog.class.getName(),
                img.toString(), dir.resolve("nbd.sock").toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.getInputStream().transferTo(out);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        String output = out.toString(StandardCharsets.UTF_8);
        System.out.println(output);
        assertTrue(output.contains("first write: 4096"), output);
        assertTrue(output.contains("direct memory full"), output);
        assertTrue(output.contains("ATTEMPT FAILED WHILE EXHAUSTED"), "no reconnect attempt failed:\n" + output);
        assertTrue(output.contains("READ 4096 MATCHES"), "the disk did not serve again once memory was back:\n" + output);
    }
}
