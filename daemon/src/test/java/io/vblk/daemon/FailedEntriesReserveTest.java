package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeException;
import io.vblk.vhost.Log;

/**
 * rev13c: entries of a {@code --persist} file that failed at start ({@link Daemon#applyOrKeep},
 * what {@code vblk daemon --persist} runs for each entry) with real images and sockets. A kept
 * entry opens first at the next restart, so its socket and image stay its own: another export
 * may not take them, and config.save may not write over its image. A start failure of any kind
 * keeps the entry and the start goes on.
 */
class FailedEntriesReserveTest {
    @TempDir
    Path dir;

    private Path image(String name) throws Exception {
        Path p = dir.resolve(name);
        Files.write(p, new byte[1 << 20]);
        return p;
    }

    private Map<String, Object> entry(String id, Path image, String socket, Object... more) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("image", image.toString());
        m.put("socket", dir.resolve(socket).toString());
        for (int i = 0; i < more.length; i += 2) {
            m.put((String) more[i], more[i + 1]);
        }
        return m;
    }

    private static List<?> ids(Object list) {
        return ((List<?>) list).stream().map(e -> ((Map<?, ?>) e).get("id")).toList();
    }

    /** A (image on an NFS mount not up) kept; B on A's socket would get it now and lose it to A at the restart. */
    @Test
    void aFailedEntrysSocketIsNotGivenToAnotherExport() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            Path gone = dir.resolve("nfs").resolve("a.img");
            assertNotNull(d.applyOrKeep(true, entry("a", gone, "vm1.sock")));
            RpcError e = assertThrows(RpcError.class,
                    () -> d.call("export.add", Params.json(entry("b", image("b.img"), "vm1.sock"))));
            assertEquals(RpcError.ALREADY_EXISTS, e.code, e.getMessage());
            assertTrue(e.getMessage().contains("'a'") && e.getMessage().contains("export.remove"), e.getMessage());
            // The same socket spelled another way is the same socket.
            assertThrows(RpcError.class, () -> d.call("export.add", Params.json(entry("b", image("b.img"), "./x/../vm1.sock"))));
            assertEquals(List.of(), d.call("export.list", Params.json(null)));

            // The entry's own id replaces it (its image back), and then the socket is its served export's.
            Files.createDirectories(gone.getParent());
            Files.write(gone, new byte[1 << 20]);
            d.call("export.add", Params.json(entry("a", gone, "vm1.sock")));
            assertEquals(List.of("a"), ids(d.call("export.list", Params.json(null))));
        }
    }

    /** A kept for another reason (an I/O thread gone): its image is not exported again. */
    @Test
    void aFailedEntrysImageIsNotExportedAgain() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            Path a = image("a.img");
            assertNotNull(d.applyOrKeep(true, entry("a", a, "a.sock", "iothreads", List.of("t-gone"))));
            Path link = dir.resolve("link.img");
            Files.createSymbolicLink(link, a);
            for (Path other : List.of(a, link, dir.resolve("x/../a.img"))) {
                RpcError e = assertThrows(RpcError.class, () -> d.call("export.add", Params.json(entry("b", other, "b.sock"))),
                        other.toString());
                assertEquals(RpcError.IN_USE, e.code, e.getMessage());
                assertTrue(e.getMessage().contains("'a'"), e.getMessage());
            }
            // Read-only beside a writer is refused as for served exports.
            assertThrows(RpcError.class, () -> d.call("export.add", Params.json(entry("b", a, "b.sock", "read_only", true))));

            // Once the failed entry is removed, its image and socket are free.
            d.call("export.remove", Params.json(Map.of("id", "a")));
            d.call("export.add", Params.json(entry("b", a, "a.sock")));
        }
    }

    /** config.save over a failed entry's image (the same file by any name, or its path while gone) would put JSON in place of the disk. */
    @Test
    void configSaveDoesNotWriteOverAFailedEntrysImage() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            Path a = image("a.img");
            assertNotNull(d.applyOrKeep(true, entry("a", a, "a.sock", "iothreads", List.of("t-gone"))));
            byte[] disk = Files.readAllBytes(a);
            Path hard = Files.createLink(dir.resolve("hard.img"), a); // config.save refuses a symbolic link by itself
            for (Path target : List.of(a, hard)) {
                RpcError e = assertThrows(RpcError.class,
                        () -> d.call("config.save", Params.json(Map.of("path", target.toString()))));
                assertTrue(e.getMessage().contains("'a'"), e.getMessage());
            }
            assertArrayEquals(disk, Files.readAllBytes(a), "the disk is untouched");

            // An image that is gone is protected by its path: the restart would open JSON as the disk.
            Path gone = dir.resolve("gone.img");
            assertNotNull(d.applyOrKeep(true, entry("g", gone, "g.sock")));
            assertThrows(RpcError.class, () -> d.call("config.save", Params.json(Map.of("path", gone.toString()))));
            assertFalse(Files.exists(gone));
        }
    }

    /**
     * An export whose open fails with a RuntimeException that is no refusal (a NativeException
     * as io_setup gives when fs.aio-max-nr is used up: not provoked for real without changing
     * a host-wide limit, so thrown by the beforeOpen test hook) is kept; the start goes on.
     */
    @Test
    @SuppressWarnings("unchecked")
    void anyStartFailureIsKeptAndTheOthersServed() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            d.beforeOpen = () -> {
                throw new NativeException(11, "io_setup");
            };
            String error = d.applyOrKeep(true, entry("a", image("a.img"), "a.sock"));
            assertNotNull(error);
            assertTrue(error.contains("io_setup"), error);
            d.beforeOpen = () -> { };
            assertEquals(null, d.applyOrKeep(true, entry("b", image("b.img"), "b.sock")));
            assertEquals(List.of("b"), ids(d.call("export.list", Params.json(null))));
            Map<String, Object> status = (Map<String, Object>) d.call("config.status", Params.json(null));
            assertEquals(List.of("a"), ids(status.get("failed_exports")), status.toString());
            // config.retry brings it back once it opens.
            Map<String, Object> retried = (Map<String, Object>) d.call("config.retry", Params.json(null));
            assertEquals(List.of("a"), retried.get("added"), retried.toString());
        }
    }
}
