package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Field;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * irev3, outside review of the control plane: a method that names an export looks it up, then
 * waits for the lock that serializes changes; an {@code export.remove} (and an
 * {@code export.add} reusing the freed descriptors) may run in between. The method must then
 * act on nothing: the removed export's image descriptor is closed, and its number now belongs to
 * the next export's image, so an {@code export.resize} of the removed one would ftruncate(2)
 * another disk, and an {@code export.set_limits} would change a closed device.
 *
 * <p>The interleaving is made deterministic by holding the daemon's change lock from the test
 * (reflection: the lock is private, and no real part can widen a window of a few instructions):
 * the resize is let go only once it waits for the lock, after its look-up.
 */
class RemovedExportAttackTest {
    private static final int IMAGE_BYTES = 1 << 20;

    @TempDir
    Path dir;

    private Path image(String name) throws Exception {
        Path p = dir.resolve(name);
        Files.write(p, new byte[IMAGE_BYTES]);
        return p;
    }

    private Map<String, Object> add(String id) throws Exception {
        return Map.of("id", id, "image", image(id + ".img").toString(), "socket", dir.resolve(id + ".sock").toString());
    }

    private static Object changeLock(Daemon d) throws ReflectiveOperationException {
        Field f = Daemon.class.getDeclaredField("changes");
        f.setAccessible(true);
        return f.get(d);
    }

    /** Runs {@code method} on its own thread, lets it look the export up and wait for the lock, then removes and re-adds. */
    private Object raceWithRemoveAndAdd(String method, Map<String, Object> params) throws Exception {
        try (Daemon d = new Daemon(Log.to(line -> { }))) {
            d.call("export.add", Params.json(add("a")));
            Object lock = changeLock(d);
            CompletableFuture<Object> outcome = new CompletableFuture<>();
            Thread caller;
            synchronized (lock) {
                caller = new Thread(() -> {
                    try {
                        outcome.complete(d.call(method, Params.json(params)));
                    } catch (RuntimeException e) {
                        outcome.complete(e);
                    }
                }, "racing-" + method);
                caller.start();
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (caller.getState() != Thread.State.BLOCKED && System.nanoTime() < deadline) {
                    Thread.sleep(1);
                }
                assertEquals(Thread.State.BLOCKED, caller.getState(), "the call waits for the change lock");
                // The lock is reentrant: the test's own thread removes 'a' and adds 'b', whose
                // image takes the lowest free descriptor, the one 'a's image had.
                d.call("export.remove", Params.json(Map.of("id", "a")));
                d.call("export.add", Params.json(add("b")));
            }
            Object result = outcome.get(30, TimeUnit.SECONDS);
            assertEquals(IMAGE_BYTES, Files.size(dir.resolve("b.img")), "the next export's image was resized through a "
                    + "descriptor of the removed one: " + result);
            // 'b' still serves its full size.
            @SuppressWarnings("unchecked")
            Map<String, Object> listed = (Map<String, Object>) ((java.util.List<Object>) d.call("export.list",
                    Params.json(null))).get(0);
            assertEquals((long) IMAGE_BYTES, ((Number) listed.get("size_bytes")).longValue());
            return result;
        }
    }

    private static void notFound(Object outcome) {
        RpcError e = assertInstanceOf(RpcError.class, outcome, () -> "expected 'no export', got " + outcome);
        assertEquals(RpcError.NOT_FOUND, e.code, e.getMessage());
        assertTrue(e.getMessage().contains("no export 'a'"), e.getMessage());
    }

    @Test
    void aResizeOfAnExportRemovedMeanwhileResizesNothing() throws Exception {
        notFound(raceWithRemoveAndAdd("export.resize", Map.of("id", "a", "size", 4 * IMAGE_BYTES)));
    }

    @Test
    void aShrinkOfAnExportRemovedMeanwhileCutsNoOtherDisk() throws Exception {
        notFound(raceWithRemoveAndAdd("export.resize", Map.of("id", "a", "size", 4096, "allow_shrink", true)));
    }

    @Test
    void limitsOfAnExportRemovedMeanwhileAreRefused() throws Exception {
        notFound(raceWithRemoveAndAdd("export.set_limits", Map.of("id", "a", "iops_limit", 10)));
    }
}
