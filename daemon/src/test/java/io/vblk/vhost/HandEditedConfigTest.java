package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.FileTime;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.jr.ob.JSON;

/**
 * {@code --persist} and a file edited by hand while the daemon runs: the next change is made
 * but does not overwrite the edit (the answer's persist_error, config.status and the log name
 * it), until {@code config.save} of the file with {@code "overwrite": true}; a file only touched,
 * or written again with the daemon's own text, is no edit.
 */
class HandEditedConfigTest {
    @TempDir
    Path dir;

    private String nullDisk(String id) {
        return DaemonRig.json(Map.of("id", id, "image", "null:1M", "socket", dir.resolve(id + ".sock").toString()));
    }

    @SuppressWarnings("unchecked")
    private static List<Object> exportIds(Path config) throws Exception {
        Map<String, Object> doc = (Map<String, Object>) JSON.std.anyFrom(Files.readString(config));
        return ((List<Map<String, Object>>) doc.get("exports")).stream().map(e -> e.get("id")).map(Object.class::cast).toList();
    }

    @Test
    @SuppressWarnings("unchecked")
    void aHandEditIsNotOverwrittenUntilConfigSaveIsToldTo() throws Exception {
        Path config = dir.resolve("vblk.json");
        try (DaemonRig d = new DaemonRig(dir.resolve("control.sock"), "--config", config.toString(), "--persist")) {
            d.result("export.add", nullDisk("a"));

            // Touched only, and written again with the same text: no edit, the next change is saved.
            Files.setLastModifiedTime(config, FileTime.fromMillis(System.currentTimeMillis() - 60_000));
            d.result("export.add", nullDisk("b"));
            Files.write(config, Files.readAllBytes(config));
            Map<String, Object> answer = (Map<String, Object>) d.result("export.add", nullDisk("c"));
            assertNull(answer.get("persist_error"), answer.toString());
            assertEquals(List.of("a", "b", "c"), exportIds(config));

            // Edited in place (same inode): the change stands, the edit stays.
            String edit = "{\"iothreads\": [], \"exports\": []}\n";
            Files.writeString(config, edit);
            answer = (Map<String, Object>) d.result("export.add", nullDisk("d"));
            assertEquals("d", answer.get("id"));
            String why = String.valueOf(answer.get("persist_error"));
            assertTrue(why.contains("changed since the daemon wrote it") && why.contains(config.toString()), answer.toString());
            assertEquals(edit, Files.readString(config));
            assertEquals(4, ((List<?>) d.result("export.list", null)).size());
            Map<String, Object> status = (Map<String, Object>) d.result("config.status", null);
            assertEquals(true, status.get("failing"), status.toString());
            assertTrue(String.valueOf(status.get("last_error")).contains("changed since the daemon wrote it"), status.toString());
            assertTrue(d.stderr().contains("changed since the daemon wrote it"), d.stderr());
            // A change that writes nothing (a refused one) does not hide it either.
            assertTrue(d.call("export.remove", "{\"id\":\"nope\"}").containsKey("error"));
            assertEquals(true, ((Map<String, Object>) d.result("config.status", null)).get("failing"));

            // config.save of the persisted file refuses too, unless told to overwrite.
            Map<String, Object> refused = d.call("config.save", DaemonRig.json(Map.of("path", config.toString())));
            assertTrue(String.valueOf(DaemonRig.error(refused).get("message")).contains("overwrite"), refused.toString());
            assertEquals(edit, Files.readString(config));
            d.result("config.save", DaemonRig.json(Map.of("path", config.toString(), "overwrite", true)));
            assertEquals(List.of("a", "b", "c", "d"), exportIds(config));
            assertEquals(false, ((Map<String, Object>) d.result("config.status", null)).get("failing"));
            answer = (Map<String, Object>) d.result("export.remove", "{\"id\":\"a\"}");
            assertNull(answer.get("persist_error"), answer.toString());
            assertEquals(List.of("b", "c", "d"), exportIds(config));

            // Replaced as an editor does (a new file renamed over it): the same.
            Path tmp = dir.resolve("vblk.json.swp");
            Files.writeString(tmp, edit);
            Files.move(tmp, config, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            answer = (Map<String, Object>) d.result("export.remove", "{\"id\":\"b\"}");
            assertTrue(String.valueOf(answer.get("persist_error")).contains("changed since the daemon wrote it"), answer.toString());
            assertEquals(edit, Files.readString(config));
        }
    }
}
