package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.ImageFormat;
import io.vblk.vhost.FormatChoice;
import io.vblk.vhost.Log;

/**
 * {@code --format} of {@code vblk serve} and {@code export.add}: named, never guessed; a raw file
 * that looks like qcow2 is warned about.
 */
class FormatOptionTest {
    @TempDir
    Path dir;

    private static ExportSpec parse(String... keyValues) {
        Map<String, Object> m = new java.util.LinkedHashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) {
            m.put(keyValues[i], keyValues[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), "disk0");
    }

    @Test
    void formatIsRawUnlessNamed() {
        assertEquals(ImageFormat.RAW, parse("image", "x.img", "socket", "s").format);
        assertEquals(ImageFormat.QCOW2,
                parse("image", "x.qcow2", "socket", "s", "format", "qcow2").format);
        assertEquals(ImageFormat.QCOW2,
                parse("image", "x.qcow2", "socket", "s", "format", "QCOW2").format);
    }

    @Test
    void unknownFormatsAndQcow2OnANullDiskAreUsageErrors() {
        InvalidParams e = assertThrows(InvalidParams.class, () -> parse("image", "x", "socket", "s", "format", "vmdk"));
        assertTrue(e.getMessage().contains("raw or qcow2"), e.getMessage());
        InvalidParams onNull = assertThrows(InvalidParams.class,
                () -> parse("image", "null:1M", "socket", "s", "format", "qcow2"));
        assertTrue(onNull.getMessage().contains("--format qcow2 needs an image file"), onNull.getMessage());
    }

    @Test
    void theQcow2L2CacheSizeIsAnOptionCheckedAndForQcow2Only() {
        assertEquals(32, parse("image", "x.qcow2", "socket", "s", "format", "qcow2").l2CacheTables);
        ExportSpec big = parse("image", "x.qcow2", "socket", "s", "format", "qcow2", "l2_cache_tables", "1024");
        assertEquals(1024, big.l2CacheTables);
        assertEquals(1024, big.toParams().get("l2_cache_tables"));
        InvalidParams tooSmall = assertThrows(InvalidParams.class,
                () -> parse("image", "x.qcow2", "socket", "s", "format", "qcow2", "l2_cache_tables", "1"));
        assertTrue(tooSmall.getMessage().contains("l2-cache-tables") || tooSmall.getMessage().contains("l2_cache_tables"),
                tooSmall.getMessage());
        InvalidParams onRaw = assertThrows(InvalidParams.class,
                () -> parse("image", "x.img", "socket", "s", "l2_cache_tables", "64"));
        assertTrue(onRaw.getMessage().contains("qcow2 only"), onRaw.getMessage());
    }

    @Test
    void aRawFileThatStartsLikeQcow2StaysRawWithOneWarning() throws Exception {
        Path p = dir.resolve("looks.img");
        byte[] data = new byte[4096];
        data[0] = 'Q';
        data[1] = 'F';
        data[2] = 'I';
        data[3] = (byte) 0xfb;
        Files.write(p, data);
        List<String> lines = new ArrayList<>();
        FormatChoice.warnIfLooksLikeQcow2(p, Log.to(lines::add));
        assertEquals(1, lines.size());
        assertTrue(lines.get(0).contains("served as raw"), lines.get(0));
        assertTrue(lines.get(0).contains("never for a disk a guest writes"), "the hint must not invite the probing attack: " + lines.get(0));
        lines.clear();
        Files.write(p, new byte[4096]);
        FormatChoice.warnIfLooksLikeQcow2(p, Log.to(lines::add));
        assertEquals(0, lines.size());
    }

    /** A FIFO put in the image's place (review 15a) must not block the control thread in open(2). */
    @Test
    void aFifoInTheImagesPlaceDoesNotBlockTheWarningCheck() throws Exception {
        Path fifo = dir.resolve("swapped.img");
        Process mk = new ProcessBuilder("mkfifo", fifo.toString()).inheritIO().start();
        assertEquals(0, mk.waitFor());
        List<String> lines = new ArrayList<>();
        java.util.concurrent.CompletableFuture<Void> check = java.util.concurrent.CompletableFuture.runAsync(
                () -> FormatChoice.warnIfLooksLikeQcow2(fifo, Log.to(lines::add)));
        try {
            check.get(10, java.util.concurrent.TimeUnit.SECONDS);
        } finally {
            if (!check.isDone()) {
                // Free the blocked open so the test JVM can end: a writer lets it return.
                try (var w = Files.newOutputStream(fifo)) {
                    w.write(0);
                }
            }
        }
        assertEquals(0, lines.size());
    }
}
