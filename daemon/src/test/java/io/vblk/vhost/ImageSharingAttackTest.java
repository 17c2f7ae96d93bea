package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * irev4: one image file exported twice by one daemon, one export writable. Two guests writing one
 * file (or one writing under another's page cache and filesystem) corrupt it for both, silently;
 * QEMU refuses the same with its image locks. The daemon refuses a second export of a file (the
 * same device and inode, however it is named: another path, a symlink, a hard link, {@code ..})
 * while either is writable; read-only exports of one file may share it; the file is free again
 * once the writable export is removed. Before the check every add below succeeded.
 */
class ImageSharingAttackTest {
    private static final int IN_USE = -32002;

    @TempDir
    Path dir;

    private static String spec(String id, Path image, Path socket, boolean readOnly) {
        Map<String, Object> m = new HashMap<>(Map.of("id", id, "image", image.toString(), "socket", socket.toString()));
        if (readOnly) {
            m.put("read_only", true);
        }
        return DaemonRig.json(m);
    }

    @Test
    void aWritableImageIsExportedOnce() throws Exception {
        Path img = DaemonRig.image(dir, "disk.img");
        Path link = dir.resolve("link.img");
        Files.createSymbolicLink(link, img);
        Path hard = dir.resolve("hard.img");
        Files.createLink(hard, img);
        Files.createDirectories(dir.resolve("sub"));
        Path dotted = dir.resolve("sub/../disk.img");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("a", img, dir.resolve("a.sock"), false));
            int n = 0;
            for (Path other : List.of(img, link, hard, dotted)) {
                for (boolean ro : new boolean[] {false, true}) {
                    Map<String, Object> r = d.call("export.add", spec("b" + n++, other, dir.resolve("b" + n + ".sock"), ro));
                    Map<String, Object> e = DaemonRig.error(r);
                    assertEquals(IN_USE, ((Number) e.get("code")).intValue(), other + " read_only " + ro + ": " + r);
                    assertTrue(String.valueOf(e.get("message")).contains("'a'"), "names the export holding it: " + e);
                }
            }
            assertEquals(1, ((List<?>) d.result("export.list", null)).size());
            d.result("export.remove", "{\"id\":\"a\"}");
            // Read-only exports share it; a writable one is then refused.
            d.result("export.add", spec("r1", img, dir.resolve("r1.sock"), true));
            d.result("export.add", spec("r2", link, dir.resolve("r2.sock"), true));
            Map<String, Object> w = d.call("export.add", spec("w", hard, dir.resolve("w.sock"), false));
            assertEquals(IN_USE, ((Number) DaemonRig.error(w).get("code")).intValue(), w.toString());
            d.result("export.remove", "{\"id\":\"r1\"}");
            d.result("export.remove", "{\"id\":\"r2\"}");
            d.result("export.add", spec("w", hard, dir.resolve("w.sock"), false));
            // A different file is never refused.
            d.result("export.add", spec("other", DaemonRig.image(dir, "other.img"), dir.resolve("o.sock"), false));
        }
    }
}
