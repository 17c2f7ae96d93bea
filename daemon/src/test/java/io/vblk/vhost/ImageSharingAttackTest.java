package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

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
 *
 * <p>irev5 (outside review): the check looked at the image's path only, before the open. A qcow2
 * overlay reads its backing file, so the base exported writable beside a live overlay (either
 * order) corrupts the overlay's guest silently; the backing files the driver opened now count as
 * read-only uses. And the file is identified as opened, not by the name it had before.
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

    private static void run(String... cmd) throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/qemu-img")), "qemu-img is not installed (.ci/run installs qemu-utils)");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), String.join(" ", cmd) + ": " + out);
    }

    /** {@code name}: a qcow2 overlay on the raw {@code base} (qemu-img create -b base -F raw). */
    private Path overlay(String name, Path base) throws Exception {
        Path o = dir.resolve(name);
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.toString(), "-F", "raw", o.toString());
        return o;
    }

    private static String qcow2(String id, Path image, Path socket, boolean readOnly) {
        Map<String, Object> m = new HashMap<>(Map.of("id", id, "image", image.toString(), "socket", socket.toString(),
                "format", "qcow2"));
        if (readOnly) {
            m.put("read_only", true);
        }
        return DaemonRig.json(m);
    }

    private static void assertInUse(Map<String, Object> r, String holder) {
        Map<String, Object> e = DaemonRig.error(r);
        assertEquals(IN_USE, ((Number) e.get("code")).intValue(), r.toString());
        assertTrue(String.valueOf(e.get("message")).contains("'" + holder + "'"), "names the export holding it: " + e);
    }

    @Test
    void theBaseOfALiveOverlayIsNotExportedWritable() throws Exception {
        Path base = DaemonRig.image(dir, "base.img");
        Path over = overlay("overlay.qcow2", base);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", qcow2("o", over, dir.resolve("o.sock"), false));
            assertInUse(d.call("export.add", spec("b", base, dir.resolve("b.sock"), false)), "o");
            // Reading the base beside the overlay is fine: both only read it.
            d.result("export.add", spec("r", base, dir.resolve("r.sock"), true));
            assertEquals(2, ((List<?>) d.result("export.list", null)).size());
            d.result("export.remove", "{\"id\":\"r\"}");
            d.result("export.remove", "{\"id\":\"o\"}");
            d.result("export.add", spec("b", base, dir.resolve("b.sock"), false));
        }
    }

    @Test
    void noOverlayIsPutOnABaseExportedWritable() throws Exception {
        Path base = DaemonRig.image(dir, "base.img");
        Path over = overlay("overlay.qcow2", base);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("b", base, dir.resolve("b.sock"), false));
            assertInUse(d.call("export.add", qcow2("o", over, dir.resolve("o.sock"), false)), "b");
            assertInUse(d.call("export.add", qcow2("o", over, dir.resolve("o.sock"), true)), "b");
            assertEquals(1, ((List<?>) d.result("export.list", null)).size());
            // The refused export's socket and id are free again.
            d.result("export.remove", "{\"id\":\"b\"}");
            d.result("export.add", qcow2("o", over, dir.resolve("o.sock"), false));
        }
    }

    @Test
    void overlaysShareTheirBase() throws Exception {
        Path base = DaemonRig.image(dir, "base.img");
        Path o1 = overlay("o1.qcow2", base);
        Path o2 = overlay("o2.qcow2", base);
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            // Read-only overlays over one base, and writable ones (each writes its own file only).
            d.result("export.add", qcow2("r1", o1, dir.resolve("r1.sock"), true));
            d.result("export.add", qcow2("r2", o2, dir.resolve("r2.sock"), true));
            d.result("export.remove", "{\"id\":\"r1\"}");
            d.result("export.remove", "{\"id\":\"r2\"}");
            d.result("export.add", qcow2("w1", o1, dir.resolve("w1.sock"), false));
            d.result("export.add", qcow2("w2", o2, dir.resolve("w2.sock"), false));
            // But one overlay is still written by one export only.
            assertInUse(d.call("export.add", qcow2("w3", o1, dir.resolve("w3.sock"), true)), "w1");
        }
    }

    @Test
    void theFileIsTheOneOpenedNotTheName() throws Exception {
        Path x = DaemonRig.image(dir, "x.img");
        Path y = dir.resolve("y.img");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            d.result("export.add", spec("a", x, dir.resolve("a.sock"), false));
            Files.move(x, y); // 'a' still writes the file, now named y.img
            DaemonRig.image(dir, "x.img");
            assertInUse(d.call("export.add", spec("y", y, dir.resolve("y.sock"), false)), "a");
            d.result("export.add", spec("x", x, dir.resolve("x.sock"), false));
        }
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
