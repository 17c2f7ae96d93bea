package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.FileOutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * export.add of a qcow2 overlay whose backing file is a FIFO (the name comes from the
 * image) answers with a refusal at once: it used to block in open(2) for ever, holding its id and socket
 * reservation and one RPC handler.
 */
class FifoBackingExportTest {
    @TempDir
    Path dir;

    @Test
    void anAddWhoseBackingFileIsAFifoAnswers() throws Exception {
        Path base = dir.resolve("base.raw");
        Files.write(base, new byte[1 << 20]);
        Path overlay = dir.resolve("o.qcow2");
        Process p = new ProcessBuilder("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
                overlay.toString(), "1M").inheritIO().start();
        assertEquals(0, p.waitFor());
        Files.delete(base);
        assertEquals(0, new ProcessBuilder("mkfifo", base.toString()).start().waitFor());

        Daemon daemon = new Daemon(Log.to(line -> { }));
        CompletableFuture<String> add = CompletableFuture.supplyAsync(() -> {
            try {
                daemon.call("export.add", Params.json(Map.of("id", "o", "image", overlay.toString(), "format", "qcow2",
                        "socket", dir.resolve("o.sock").toString())));
                return "added";
            } catch (Exception e) {
                return "refused: " + e.getMessage();
            }
        });
        String got;
        try {
            // 30 s: a hang guard (the open of a FIFO blocks for ever; a loaded machine only slows a refusal).
            got = add.get(30, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            got = null;
        }
        CompletableFuture<Void> close = CompletableFuture.runAsync(daemon::close);
        boolean closed;
        try {
            close.get(30, TimeUnit.SECONDS);
            closed = true;
        } catch (java.util.concurrent.TimeoutException e) {
            closed = false;
        }
        if (got == null) {
            // Unblock the open so the test JVM can end (only when it blocked: with no reader this would block).
            try (FileOutputStream w = new FileOutputStream(base.toFile())) {
                w.write(0);
            } catch (java.io.IOException ignored) {
                // the reader has gone
            }
        }
        assertTrue(got != null, "export.add of an overlay whose backing file is a FIFO did not answer within 30 s"
                + " (daemon.close within 30 s after: " + closed + ")");
        assertTrue(closed, "daemon.close did not end within 30 s while the add was blocked");
        assertTrue(got.startsWith("refused") && got.contains("not a regular file or a block device"), got);
    }
}
