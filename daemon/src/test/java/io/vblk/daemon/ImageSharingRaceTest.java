package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * irev5 (outside review): the daemon identified an export's image by the name's stat before the
 * open, so a path swapped between the stat and the open (a rename over it) had a second export
 * open, writable, the file another export writes. The daemon now checks the files as opened, by
 * descriptor, under the change lock after the open.
 *
 * <p>The swap is made deterministic through the daemon's package-private {@code beforeOpen}
 * hook, which runs where the window is (no real part can time a rename into a few instructions).
 * Before the fix, the add below succeeded.
 */
class ImageSharingRaceTest {
    private static final int IMAGE_BYTES = 1 << 20;

    @TempDir
    Path dir;

    private Path image(String name) throws Exception {
        Path p = dir.resolve(name);
        Files.write(p, new byte[IMAGE_BYTES]);
        return p;
    }

    private Params add(String id, Path image) {
        return Params.json(Map.of("id", id, "image", image.toString(), "socket", dir.resolve(id + ".sock").toString()));
    }

    @Test
    void aPathSwappedBeforeTheOpenIsCheckedAsOpened() throws Exception {
        Path a = image("a.img");
        Path b = image("b.img");
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            d.call("export.add", add("a", a));
            // b.img passes the check by name; then a.img is renamed over it (the attacker's
            // swap), so the open finds the file 'a' writes.
            d.beforeOpen = () -> {
                try {
                    Files.move(a, b, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
                } catch (java.io.IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            };
            RpcError e = assertThrows(RpcError.class, () -> d.call("export.add", add("b", b)));
            assertEquals(RpcError.IN_USE, e.code, e.getMessage());
            assertTrue(e.getMessage().contains("'a'"), e.getMessage());
            d.beforeOpen = () -> { };
            assertEquals(1, ((List<?>) d.call("export.list", Params.json(null))).size());
            // The refused export left nothing behind: its id and socket are free.
            d.call("export.add", add("b", image("c.img")));
            assertEquals(2, ((List<?>) d.call("export.list", Params.json(null))).size());
        }
    }
}
