package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

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
 * rev11b: export.add checks that nothing listens on the requested socket (Daemon.listening) with
 * a BLOCKING connect(2), under the daemon's change lock. A Unix listener whose backlog is full and
 * that never accepts (a stopped or stuck process; a vblk export of this very daemon whose one
 * frontend is connected, named by another spelling of its path, since it accepts nobody else and
 * its backlog is 4) makes that connect wait for ever: the add never answers, and while it holds
 * the lock no other export can be added, removed or resized, and a shutdown (closeExports takes
 * the lock) never finishes. Another client's export.add of an unrelated socket must still be
 * answered; the guard is a failure guard, not a speed measurement.
 */
class AddOfBusySocketHoldsNoChangeTest {
    private static final Duration GUARD = Duration.ofSeconds(20);

    @TempDir
    Path dir;

    @Test
    void anAddNamingAStuckListenerHoldsNoOtherChange() throws Exception {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        Path stuck = dir.resolve("stuck.sock");
        ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(stuck), 1); // never accepts
        List<SocketChannel> queued = new ArrayList<>();
        for (int i = 0; i < 2; i++) { // what the kernel queues for a backlog of 1; the next connect waits
            queued.add(SocketChannel.open(UnixDomainSocketAddress.of(stuck)));
        }
        Path a = dir.resolve("a.img");
        Files.write(a, new byte[1 << 20]);
        Path b = dir.resolve("b.img");
        Files.write(b, new byte[1 << 20]);
        CompletableFuture<Object> hostile = CompletableFuture.supplyAsync(() -> daemon.call("export.add",
                Params.json(Map.of("id", "a", "image", a.toString(), "socket", stuck.toString()))));
        try {
            Thread.sleep(1000);
            assertTimeoutPreemptively(GUARD, () -> daemon.call("export.add", Params.json(Map.of("id", "b", "image", b.toString(),
                    "socket", dir.resolve("b.sock").toString()))),
                    "an unrelated export.add waited behind one naming a socket whose listener accepts nobody");
        } finally {
            listener.close(); // the waiting connect fails now
            for (SocketChannel ch : queued) {
                ch.close();
            }
            try {
                hostile.get();
            } catch (Exception e) {
                // refused or failed: either way it has ended
            }
            daemon.close();
        }
    }

    /**
     * The same with no foreign process: an export of this daemon with its frontend connected
     * accepts nobody else (VhostUserServer serves one at a time, backlog 4). Named through a
     * symlinked directory, its socket passes the same-path check (normalized paths, not files)
     * and reaches the blocking connect.
     */
    @Test
    void anAddNamingABusyExportByAnotherPathHoldsNoOtherChange() throws Exception {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        Path x = dir.resolve("x.img");
        Files.write(x, new byte[1 << 20]);
        Path y = dir.resolve("y.img");
        Files.write(y, new byte[1 << 20]);
        Path z = dir.resolve("z.img");
        Files.write(z, new byte[1 << 20]);
        Path xs = dir.resolve("x.sock");
        Path link = Files.createSymbolicLink(dir.resolve("link"), dir);
        List<SocketChannel> frontends = new ArrayList<>();
        CompletableFuture<Object> hostile = null;
        try {
            daemon.call("export.add", Params.json(Map.of("id", "x", "image", x.toString(), "socket", xs.toString())));
            for (int i = 0; i < 6; i++) { // the one served, then what its backlog of 4 queues
                frontends.add(SocketChannel.open(UnixDomainSocketAddress.of(xs)));
                Thread.sleep(100);
            }
            Path other = link.resolve("x.sock");
            hostile = CompletableFuture.supplyAsync(() -> daemon.call("export.add",
                    Params.json(Map.of("id", "y", "image", y.toString(), "socket", other.toString()))));
            Thread.sleep(1000);
            assertTimeoutPreemptively(GUARD, () -> daemon.call("export.add", Params.json(Map.of("id", "z", "image", z.toString(),
                    "socket", dir.resolve("z.sock").toString()))),
                    "an unrelated export.add waited behind one naming a busy export's socket by another path");
        } finally {
            for (SocketChannel ch : frontends) {
                ch.close();
            }
            if (hostile != null) {
                try {
                    hostile.get();
                } catch (Exception e) {
                    // refused or failed: either way it has ended
                }
            }
            daemon.close();
        }
    }

    /** The shutdown (daemon.shutdown, SIGTERM: Daemon.close) waits for the change lock the stuck add holds. */
    @Test
    void aShutdownDoesNotWaitForAnAddNamingAStuckListener() throws Exception {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        Path stuck = dir.resolve("stuck.sock");
        ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(stuck), 1);
        List<SocketChannel> queued = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            queued.add(SocketChannel.open(UnixDomainSocketAddress.of(stuck)));
        }
        Path a = dir.resolve("a.img");
        Files.write(a, new byte[1 << 20]);
        CompletableFuture<Object> hostile = CompletableFuture.supplyAsync(() -> daemon.call("export.add",
                Params.json(Map.of("id", "a", "image", a.toString(), "socket", stuck.toString()))));
        try {
            Thread.sleep(1000);
            daemon.requestShutdown();
            assertTimeoutPreemptively(GUARD, daemon::close, "the daemon's close waited for an export.add stuck in connect(2)");
        } finally {
            listener.close();
            for (SocketChannel ch : queued) {
                ch.close();
            }
            try {
                hostile.get();
            } catch (Exception e) {
                // ended
            }
            daemon.close();
        }
    }
}
