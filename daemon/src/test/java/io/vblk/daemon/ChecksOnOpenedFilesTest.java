package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * The checks that keep a failed entry's image (rev13c) and every export's files from being
 * written over are made on the files as opened, not on names looked at before: a rename between
 * the check and the write or open is caught. And a failed entry's image is never stat'ed under
 * the lock that serializes changes (a path on a hung NFS server would stall every change).
 */
class ChecksOnOpenedFilesTest {
    @TempDir
    Path dir;

    private Path image(Path where) throws Exception {
        Files.createDirectories(where.getParent());
        Files.write(where, new byte[1 << 20]);
        return where;
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

    /**
     * config.save to images/../sub/a.img, a harmless name when checked; then (after the check)
     * sub is swapped for a link to the directory of failed entry a's image and the temporary
     * file moved along: a write that went by name again would rename JSON over a's disk.
     */
    @Test
    void configSaveWritesInTheDirectoryItChecked() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            Path images = dir.resolve("images");
            Path a = image(images.resolve("a.img"));
            assertNotNull(d.applyOrKeep(true, entry("a", a, "a.sock", "iothreads", List.of("t-gone"))));
            byte[] disk = Files.readAllBytes(a);
            Path sub = Files.createDirectories(dir.resolve("sub"));
            Path target = sub.resolve("a.img");
            ConfigFile.beforeRename = () -> {
                try {
                    Path old = dir.resolve("sub.old");
                    Files.move(sub, old);
                    Files.createSymbolicLink(sub, images);
                    Files.move(old.resolve(".a.img.tmp"), images.resolve(".a.img.tmp"));
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            };
            try {
                assertThrows(RpcError.class, () -> d.call("config.save", Params.json(Map.of("path", target.toString()))));
            } finally {
                ConfigFile.beforeRename = () -> { };
            }
            assertArrayEquals(disk, Files.readAllBytes(a), "a's disk is untouched");
        }
    }

    /**
     * config.save over saved.json, a harmless file when checked; after the last check, failed
     * entry a's image is renamed to saved.json: the write swaps the names, finds the file it
     * replaced is not the one it checked, swaps them back and refuses. A plain rename would
     * have left a's disk without a name (JSON in its place).
     */
    @Test
    void configSaveReplacesOnlyTheFileItChecked() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            Path a = image(dir.resolve("a.img"));
            Files.write(a, new byte[] {1, 2, 3}, java.nio.file.StandardOpenOption.APPEND);
            assertNotNull(d.applyOrKeep(true, entry("a", a, "a.sock", "iothreads", List.of("t-gone"))));
            byte[] disk = Files.readAllBytes(a);
            Path saved = dir.resolve("saved.json");
            Files.writeString(saved, "{}\n");
            ConfigFile.beforePublish = () -> {
                try {
                    Files.move(a, saved, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            };
            try {
                assertThrows(RpcError.class, () -> d.call("config.save", Params.json(Map.of("path", saved.toString()))));
            } finally {
                ConfigFile.beforePublish = () -> { };
            }
            assertArrayEquals(disk, Files.readAllBytes(saved), "a's disk keeps its name and its bytes");
            assertTrue(!Files.exists(dir.resolve(".saved.json.tmp")), "nothing left beside it");
        }
    }

    /**
     * export.add of b.img, a file of its own when checked by name, renamed (a hard link to failed
     * entry a's image put in its place) before the open: the file as opened is a's, refused.
     */
    @Test
    void anAddChecksTheImageAsOpenedAgainstFailedEntries() throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            Path a = image(dir.resolve("a.img"));
            assertNotNull(d.applyOrKeep(true, entry("a", a, "a.sock", "iothreads", List.of("t-gone"))));
            Path b = image(dir.resolve("b.img"));
            d.beforeOpen = () -> {
                try {
                    Files.delete(b);
                    Files.createLink(b, a);
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            };
            RpcError e = assertThrows(RpcError.class, () -> d.call("export.add", Params.json(entry("b", b, "b.sock"))));
            assertEquals(RpcError.IN_USE, e.code, e.getMessage());
            assertTrue(e.getMessage().contains("'a'"), e.getMessage());
            assertEquals(List.of(), d.call("export.list", Params.json(null)));
        }
    }

    /**
     * A failed entry's image whose stat hangs (held here by the test hook, as a hung NFS server
     * holds it): the add that stats it waits, every other change goes on meanwhile.
     */
    @Test
    void aHungStatOfAFailedImageHoldsNoOtherChange() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(2);
        CountDownLatch stuck = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            assertNotNull(d.applyOrKeep(true, entry("a", dir.resolve("nfs/a.img"), "a.sock")));
            Thread main = Thread.currentThread();
            d.beforeFailedImageStat = () -> {
                if (Thread.currentThread() != main) {
                    stuck.countDown();
                    try {
                        release.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
            };
            Future<Object> slow = pool.submit(() -> d.call("export.add", Params.json(entry("b", image(dir.resolve("b.img")),
                    "b.sock"))));
            assertTrue(stuck.await(60, TimeUnit.SECONDS), "the add reached the stat");
            // Under the change lock the stat would hold these (a hang guard, not a timing: they never wait for the stat).
            Future<Object> other = pool.submit(() -> {
                d.call("iothread.add", Params.json(Map.of("id", "t0")));
                return d.call("export.remove", Params.json(Map.of("id", "a")));
            });
            try {
                other.get(60, TimeUnit.SECONDS);
            } finally {
                release.countDown();
            }
            slow.get(60, TimeUnit.SECONDS);
            assertEquals(1, ((List<?>) d.call("export.list", Params.json(null))).size());
        } finally {
            release.countDown();
            pool.shutdownNow();
        }
    }
    /**
     * A failed entry's socket directory whose stat hangs (held by the test hook, as a hung NFS
     * or FUSE mount holds it): the add whose socket has the same file name (so both directories
     * are stat'ed: the same directory by another path is the same socket) waits, every other
     * change goes on meanwhile. The comparison still refuses the failed entry's socket reached
     * through a symbolic link.
     */
    @Test
    void aHungStatOfAFailedSocketsDirectoryHoldsNoOtherChange() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(2);
        CountDownLatch stuck = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            Files.createDirectories(dir.resolve("nfs"));
            Files.createDirectories(dir.resolve("local"));
            assertNotNull(d.applyOrKeep(true, entry("a", dir.resolve("gone.img"), "nfs/x.sock")));
            Path link = Files.createSymbolicLink(dir.resolve("link"), dir.resolve("nfs"));
            RpcError taken = assertThrows(RpcError.class, () -> d.call("export.add", Params.json(entry("c",
                    image(dir.resolve("c.img")), link.getFileName() + "/x.sock"))));
            assertEquals(RpcError.ALREADY_EXISTS, taken.code, taken.getMessage());
            assertTrue(taken.getMessage().contains("export 'a'"), taken.getMessage());

            Thread main = Thread.currentThread();
            d.beforeFailedSocketStat = () -> {
                if (Thread.currentThread() != main) {
                    stuck.countDown();
                    try {
                        release.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
            };
            Future<Object> slow = pool.submit(() -> d.call("export.add", Params.json(entry("b", image(dir.resolve("b.img")),
                    "local/x.sock"))));
            assertTrue(stuck.await(60, TimeUnit.SECONDS), "the add reached the stat");
            // Under the change lock the stat would hold these (a hang guard, not a timing: they never wait for the stat).
            Future<Object> other = pool.submit(() -> {
                d.call("iothread.add", Params.json(Map.of("id", "t0")));
                return d.call("export.remove", Params.json(Map.of("id", "a")));
            });
            try {
                other.get(60, TimeUnit.SECONDS);
            } finally {
                release.countDown();
            }
            slow.get(60, TimeUnit.SECONDS);
            assertEquals(1, ((List<?>) d.call("export.list", Params.json(null))).size());
        } finally {
            release.countDown();
            pool.shutdownNow();
        }
    }
}
