package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.daemon.Main;

/**
 * irev4: {@code vblk daemon --config FILE} where FILE is not a configuration: a FIFO nobody writes
 * (the daemon hung in open for ever before), a directory, a character device that never ends
 * ({@code /dev/zero}: the daemon read until the heap was gone before), a sparse file of 3 GiB (an
 * OutOfMemoryError before), a symlink to {@code /proc/self/mem}, nesting 100k deep, bytes that are
 * not UTF-8. Each ends at once with status 2 and one line saying why; the control socket is
 * never created. Each run is on its own thread, so a hang fails the test instead of stopping it.
 */
class ConfigFileAttackTest {
    @TempDir
    Path dir;

    /** Runs {@code vblk daemon --config config}; its status, or a failure if it has not ended within 20 s. */
    private String refused(Path config) throws Exception {
        Path control = dir.resolve("control.sock");
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int[] status = {-1};
        Thread t = new Thread(() -> status[0] = Main.run(new String[] {"daemon", "--control", control.toString(), "--config",
                config.toString()}, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8),
                false), "config-attack");
        t.setDaemon(true);
        t.start();
        t.join(TimeUnit.SECONDS.toMillis(20));
        String stderr = err.toString(StandardCharsets.UTF_8);
        assertFalse(t.isAlive(), config + ": the daemon is still starting 20 s later; stderr " + stderr);
        assertEquals(2, status[0], config + ": " + stderr + out.toString(StandardCharsets.UTF_8));
        assertFalse(Files.exists(control), config + ": no control socket");
        assertTrue(stderr.contains("--config"), stderr);
        return stderr;
    }

    @Test
    void aFifoIsRefusedWithoutWaitingForAWriter() throws Exception {
        Path fifo = dir.resolve("config.fifo");
        assertEquals(0, new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor());
        assertTrue(refused(fifo).contains("not a regular file"));
    }

    @Test
    void devicesAndDirectoriesAreRefused() throws Exception {
        assertTrue(refused(Path.of("/dev/zero")).contains("not a regular file"));
        assertTrue(refused(dir).contains("not a regular file"));
        Path link = dir.resolve("mem.json");
        Files.createSymbolicLink(link, Path.of("/proc/self/mem"));
        refused(link);
    }

    @Test
    void aHugeFileIsRefusedBeforeItIsRead() throws Exception {
        Path huge = dir.resolve("huge.json");
        try (RandomAccessFile f = new RandomAccessFile(huge.toFile(), "rw")) {
            f.setLength(3L << 30); // sparse: costs no disk
        }
        assertTrue(refused(huge).contains("larger than"));
    }

    @Test
    void deepNestingAndBadBytesAreRefused() throws Exception {
        Path deep = dir.resolve("deep.json");
        Files.writeString(deep, "{\"exports\":" + "[".repeat(100_000) + "]".repeat(100_000) + "}");
        refused(deep);
        Path bad = dir.resolve("bad.json");
        Files.write(bad, new byte[] {'{', '"', (byte) 0xff, (byte) 0xfe, '"', ':', '1', '}'});
        refused(bad);
    }
}
