package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * Regression (review rev11b): export.add checked that nothing listens on the requested socket
 * with a BLOCKING connect(2), under the daemon's change lock. A Unix listener whose backlog is
 * full and that never accepts (a stopped or stuck process; a vblk export of this very daemon
 * whose one frontend is connected, named by another spelling of its path, since it accepts
 * nobody else and its backlog is 4) made that connect wait for ever: the add never answered,
 * and while it held the lock no other export could be added, removed or resized, and a shutdown
 * (closeExports takes the lock) never finished. Another client's export.add of an unrelated
 * socket must still be answered; the guard is a failure guard, not a speed measurement.
 */
class AddOfBusySocketHoldsNoChangeTest {
    private static final Duration GUARD = Duration.ofSeconds(20);

    @TempDir
    Path dir;

    @Test
    void anAddNamingAStuckListenerHoldsNoOtherChange() throws Exception {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        Path a = image("a.img");
        Path b = image("b.img");
        CompletableFuture<Object> hostile = null;
        try (StuckListener stuck = new StuckListener(dir.resolve("stuck.sock"))) {
            hostile = addLater(daemon, "a", a, stuck.path);
            Thread.sleep(1000);
            assertTimeoutPreemptively(GUARD, () -> add(daemon, "b", b, dir.resolve("b.sock")),
                    "an unrelated export.add waited behind one naming a socket whose listener accepts nobody");
        } finally {
            awaitEnd(hostile); // the listener closed: the waiting connect fails now
            daemon.close();
        }
    }

    /**
     * The same with no foreign process: an export of this daemon with its frontend connected
     * serves nobody else (VhostUserServer serves one at a time, keeps 4 waiting, backlog 4). Named through a
     * symlinked directory, its socket passed the same-path check (normalized paths, not files)
     * and reached the blocking connect.
     */
    @Test
    void anAddNamingABusyExportByAnotherPathHoldsNoOtherChange() throws Exception {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        Path x = image("x.img");
        Path y = image("y.img");
        Path z = image("z.img");
        Path xs = dir.resolve("x.sock");
        Path link = Files.createSymbolicLink(dir.resolve("link"), dir);
        List<SocketChannel> frontends = new ArrayList<>();
        CompletableFuture<Object> hostile = null;
        try {
            add(daemon, "x", x, xs);
            // The one served, the 4 it accepts and keeps waiting, then what its backlog of 4 queues (5).
            for (int i = 0; i < 10; i++) {
                frontends.add(SocketChannel.open(UnixDomainSocketAddress.of(xs)));
                Thread.sleep(100);
            }
            hostile = addLater(daemon, "y", y, link.resolve("x.sock"));
            Thread.sleep(1000);
            assertTimeoutPreemptively(GUARD, () -> add(daemon, "z", z, dir.resolve("z.sock")),
                    "an unrelated export.add waited behind one naming a busy export's socket by another path");
        } finally {
            closeAll(frontends);
            awaitEnd(hostile);
            daemon.close();
        }
    }

    /** The shutdown (daemon.shutdown, SIGTERM: Daemon.close) waited for the change lock the stuck add held. */
    @Test
    void aShutdownDoesNotWaitForAnAddNamingAStuckListener() throws Exception {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        Path a = image("a.img");
        CompletableFuture<Object> hostile = null;
        try (StuckListener stuck = new StuckListener(dir.resolve("stuck.sock"))) {
            hostile = addLater(daemon, "a", a, stuck.path);
            Thread.sleep(1000);
            daemon.requestShutdown();
            assertTimeoutPreemptively(GUARD, daemon::close, "the daemon's close waited for an export.add stuck in connect(2)");
        } finally {
            awaitEnd(hostile);
            daemon.close();
        }
    }

    /** A Unix listener that never accepts, its backlog of 1 full: the next blocking connect waits. */
    private static final class StuckListener implements AutoCloseable {
        final Path path;
        private final ServerSocketChannel listener;
        private final List<SocketChannel> queued = new ArrayList<>();

        StuckListener(Path path) throws IOException {
            this.path = path;
            listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            listener.bind(UnixDomainSocketAddress.of(path), 1);
            for (int i = 0; i < 2; i++) { // what the kernel queues for a backlog of 1
                queued.add(SocketChannel.open(UnixDomainSocketAddress.of(path)));
            }
        }

        @Override
        public void close() throws IOException {
            listener.close();
            closeAll(queued);
        }
    }

    private Path image(String name) throws IOException {
        Path p = dir.resolve(name);
        Files.write(p, new byte[1 << 20]);
        return p;
    }

    private static Object add(Daemon daemon, String id, Path image, Path socket) {
        return daemon.call("export.add", Params.json(Map.of("id", id, "image", image.toString(), "socket", socket.toString())));
    }

    private static CompletableFuture<Object> addLater(Daemon daemon, String id, Path image, Path socket) {
        return CompletableFuture.supplyAsync(() -> add(daemon, id, image, socket));
    }

    private static void closeAll(List<SocketChannel> channels) throws IOException {
        for (SocketChannel ch : channels) {
            ch.close();
        }
    }

    /** Waits for a hostile add to end: refused or failed, either way. */
    private static void awaitEnd(CompletableFuture<?> f) {
        if (f == null) {
            return;
        }
        try {
            f.get();
        } catch (Exception e) {
            // ended
        }
    }
}
