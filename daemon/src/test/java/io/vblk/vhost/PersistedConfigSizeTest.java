package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * rev13b: {@code vblk daemon --persist} never writes a file the same command line refuses at
 * the restart ({@code --config} reads at most 16 MiB). A change that would make the file too
 * large is refused before it takes effect, the file keeps its bytes, and the restart serves
 * every export. The file starts near the limit (a hand-written entry that failed at start is
 * kept as written, padding and all), so one add crosses it: no thousand exports needed.
 */
class PersistedConfigSizeTest {
    /** DaemonCommand.Config.MAX_BYTES. */
    private static final int MAX_BYTES = 16 << 20;

    @TempDir
    Path dir;

    private String add(String id, Object... more) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("image", "null:1M");
        m.put("socket", dir.resolve(id + ".sock").toString());
        for (int i = 0; i < more.length; i += 2) {
            m.put((String) more[i], more[i + 1]);
        }
        return DaemonRig.json(m);
    }

    @Test
    @SuppressWarnings("unchecked")
    void anAddThatWouldOutgrowTheFileIsRefusedAndTheRestartServesEveryExport() throws Exception {
        Path config = dir.resolve("vblk.json");
        // One entry that fails at start (an unknown parameter), kept in the file as written: ~3 KB below the limit.
        String head = "{\"exports\":[{\"id\":\"kept\",\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("kept.sock") + "\",\"pad\":\"";
        String tail = "\"}]}\n";
        String pad = "x".repeat(MAX_BYTES - 3000 - head.length() - tail.length());
        Files.writeString(config, head + pad + tail);
        List<Object> uids = new ArrayList<>(Collections.nCopies(1000, 1_000_000)); // ~9 KB: within the cap, past the room left
        byte[] before;
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist")) {
            before = Files.readAllBytes(config); // in the daemon's form now
            assertTrue(before.length < MAX_BYTES - 2000 && before.length > MAX_BYTES - 4000, "file " + before.length);
            Map<String, Object> e = DaemonRig.error(d.call("export.add", add("big", "allow_uids", uids)));
            assertTrue(String.valueOf(e.get("message")).contains("a restart reads"), e.toString());
            assertArrayEquals(before, Files.readAllBytes(config), "a refused add leaves the file as it was");
            assertEquals(List.of(), d.result("export.list", null), "nothing of the refused add took effect");
            assertTrue(!Files.exists(dir.resolve("big.sock")), "the refused export's socket was never made");
            d.result("export.add", add("small", "allow_uids", List.of(0))); // what fits is still taken
            assertTrue(Files.size(config) <= MAX_BYTES, "file " + Files.size(config));
        }
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist")) {
            List<Map<String, Object>> list = (List<Map<String, Object>>) d.result("export.list", null);
            assertEquals(List.of("small"), list.stream().map(m -> m.get("id")).toList());
            Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
            assertTrue(String.valueOf(status).contains("kept"), "the failed entry is still kept: " + status);
        }
        assertTrue(new String(Files.readAllBytes(config), StandardCharsets.UTF_8).contains("\"small\""));
    }

    /** The reviewer's calls: allow_uids of 340,000 entries (a 680 KB line) are refused, naming the cap, before anything changes. */
    @Test
    void aHugeAllowUidsListIsRefusedByItsCap() throws Exception {
        Path config = dir.resolve("vblk.json");
        List<Object> uids = new ArrayList<>(Collections.nCopies(340_000, 0));
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist")) {
            byte[] before = Files.readAllBytes(config);
            Map<String, Object> e = DaemonRig.error(d.call("export.add", add("e0", "allow_uids", uids)));
            assertTrue(String.valueOf(e.get("message")).contains("allow_uids takes at most 1024 items"), e.toString());
            assertArrayEquals(before, Files.readAllBytes(config));
        }
    }

    /**
     * A hand-written file just below the limit whose entries take more room in the daemon's form
     * (every default written out): the start serves it, but never writes a file that would not
     * load: the old one stays, config.status says the state is not saved, config.save refuses
     * too, and the restart serves the same disks.
     */
    @Test
    @SuppressWarnings("unchecked")
    void aStartWhoseFileWouldOutgrowTheLimitKeepsTheFileItRead() throws Exception {
        Path config = dir.resolve("vblk.json");
        String head = "{\"exports\":[{\"id\":\"a\",\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("a.sock") + "\"},"
                + "{\"id\":\"kept\",\"image\":\"null:1M\",\"socket\":\"" + dir.resolve("kept.sock") + "\",\"pad\":\"";
        String tail = "\"}]}\n";
        Files.writeString(config, head + "x".repeat(MAX_BYTES - 300 - head.length() - tail.length()) + tail);
        byte[] before = Files.readAllBytes(config);
        for (int run = 0; run < 2; run++) {
            try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist")) {
                List<Map<String, Object>> list = (List<Map<String, Object>>) d.result("export.list", null);
                assertEquals(List.of("a"), list.stream().map(m -> m.get("id")).toList());
                Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
                assertEquals(true, status.get("failing"), status.toString());
                assertTrue(String.valueOf(status.get("last_error")).contains("a restart reads"), status.toString());
                Path saved = dir.resolve("saved.json");
                Map<String, Object> e = DaemonRig.error(d.call("config.save", DaemonRig.json(Map.of("path", saved.toString()))));
                assertTrue(String.valueOf(e.get("message")).contains("a restart reads"), e.toString());
                assertTrue(!Files.exists(saved), "config.save wrote no file that would not load");
            }
            assertArrayEquals(before, Files.readAllBytes(config), "the file the daemon read is kept");
        }
    }
}
