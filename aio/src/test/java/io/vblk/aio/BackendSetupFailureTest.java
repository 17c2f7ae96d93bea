package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A back end takes its image's hold in the shared constructor, before its own set-up (the ring,
 * the AIO context, the worker threads). A failure there (an OutOfMemoryError of a full
 * direct-memory pool: io_uring's clone argument, the AIO context's out-buffer, a worker's
 * window; or of a thread the system refuses to start) kept the hold for ever: the image's
 * close was then deferred to a release that never came, and its descriptor (with its OFD
 * locks) stayed open. Now each set-up frees what it made and gives the hold back, once: the
 * image's close closes the descriptor. The failure is thrown from a test seam at each step
 * ({@link SlottedBackend#setupHook}): nothing real fails at one chosen allocation on demand.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class BackendSetupFailureTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        SlottedBackend.setupHook = null;
    }

    @ParameterizedTest
    @ValueSource(strings = {"io_uring: io_uring start", "io_uring: io_uring end", "single-issuer: io_uring end",
        "linux-aio: linux-aio start", "linux-aio: linux-aio end",
        "threads: threads start", "threads: threads worker 0", "threads: threads worker 1", "threads: threads end"})
    void aSetUpThatFailsAfterTheHoldGivesItBackAndLeavesNothingOpen(String kindAndStep) throws Exception {
        assumeTrue(Image.LINUX);
        String kind = kindAndStep.substring(0, kindAndStep.indexOf(':'));
        String step = kindAndStep.substring(kind.length() + 2);
        Path path = dir.resolve("img");
        Files.write(path, new byte[64 << 10]);
        Image image = Image.open(path, ImageOptions.defaults());
        long descriptorsBefore = descriptors() - ImageClosedUnderBackendTest.descriptorsOn(path);
        long workersBefore = workerThreads();
        SlottedBackend.setupHook = s -> {
            if (s.equals(step)) {
                throw new OutOfMemoryError("injected at " + s);
            }
        };
        OutOfMemoryError e = assertThrows(OutOfMemoryError.class, () -> open(kind, image));
        SlottedBackend.setupHook = null;
        assertEquals("injected at " + step, e.getMessage());

        assertEquals(0, image.holds(), "the hold was given back");
        assertTrue(descriptors() - ImageClosedUnderBackendTest.descriptorsOn(path) <= descriptorsBefore,
                "no ring, eventfd or pipe left open (the image's own channels close with it, below)");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (workerThreads() > workersBefore) {
            assertTrue(System.nanoTime() < deadline, "a started worker still runs");
            Thread.sleep(5);
        }
        assertTrue(ImageClosedUnderBackendTest.descriptorsOn(path) >= 1, "open until the image's own close");
        image.close();
        assertEquals(0, ImageClosedUnderBackendTest.descriptorsOn(path), "the image's close closed its descriptor");

        // The same image kind still opens and closes cleanly afterwards.
        try (Image again = Image.open(path, ImageOptions.defaults()); IoBackend io = open(kind, again)) {
            assertEquals(1, again.holds());
            assertEquals(0, io.inFlight());
        }
        assertEquals(0, ImageClosedUnderBackendTest.descriptorsOn(path));
    }

    private static IoBackend open(String kind, Image image) {
        switch (kind) {
            case "io_uring":
                return new IoUringBackend(image, BackendOptions.depth(4));
            case "single-issuer": // a ring with an exit watch: a pipe's read end besides the ring
                return new IoUringBackend(image, BackendOptions.depth(4).singleIssuer(true));
            case "linux-aio":
                return new LinuxAioBackend(image, BackendOptions.depth(4));
            default:
                return new ThreadPoolBackend(image, BackendOptions.depth(4).workerThreads(2));
        }
    }

    private static long descriptors() throws IOException {
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.count();
        }
    }

    private static long workerThreads() {
        return Thread.getAllStackTraces().keySet().stream()
                .filter(t -> t.isAlive() && t.getName().startsWith("vblk-aio-threads-")).count();
    }
}
