package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * rev13b: {@code config.save {path}} replaces its target by a rename, so it must never name a
 * file an export uses: its image, a backing file of its qcow2 chain (by device and inode, so a
 * hard link to one is refused too) or its socket. Each such file keeps its bytes; an ordinary
 * path is still written.
 */
class ConfigSaveTargetTest {
    @TempDir
    Path dir;

    /** Writes a recognizable first block into {@code image}, its size kept. */
    private static void stamp(Path image, int value) throws java.io.IOException {
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(image.toFile(), "rw")) {
            f.write(new byte[] {(byte) value, (byte) (value + 1), (byte) (value + 2)});
        }
    }

    @Test
    void aFileAnExportUsesIsNeverReplaced() throws Exception {
        Path image = DaemonRig.image(dir, "disk.img");
        stamp(image, 1);
        Path base = DaemonRig.image(dir, "base.img");
        stamp(base, 5);
        Path overlay = dir.resolve("overlay.qcow2");
        Process q = new ProcessBuilder("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "raw",
                overlay.toString(), "4M").inheritIO().start();
        assertEquals(0, q.waitFor());
        Path link = dir.resolve("link-to-base");
        Files.createLink(link, base);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", DaemonRig.json(Map.of("id", "raw", "image", image.toString(), "socket",
                    dir.resolve("raw.sock").toString())));
            d.result("export.add", DaemonRig.json(Map.of("id", "q", "image", overlay.toString(), "format", "qcow2",
                    "socket", dir.resolve("q.sock").toString())));
            for (Path target : new Path[] {image, overlay, base, link, dir.resolve("raw.sock")}) {
                byte[] before = Files.isRegularFile(target) ? Files.readAllBytes(target) : null;
                Map<String, Object> e = DaemonRig.error(d.call("config.save", DaemonRig.json(Map.of("path", target.toString()))));
                assertTrue(String.valueOf(e.get("message")).contains("refused"), target + ": " + e);
                if (before != null) {
                    assertArrayEquals(before, Files.readAllBytes(target), target + " kept its bytes");
                }
            }
            assertTrue(String.valueOf(DaemonRig.error(d.call("config.save", DaemonRig.json(Map.of("path", base.toString()))))
                    .get("message")).contains("export 'q'"), "the refusal names the export");
            Path saved = dir.resolve("saved.json");
            d.result("config.save", DaemonRig.json(Map.of("path", saved.toString())));
            assertTrue(Files.readString(saved).contains("\"q\""));
        }
    }
}
