package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * Review rev17c: an export.add refused for a duplicate id, or for a socket one of the daemon's own
 * exports serves, first probed the socket with a connect(2): the live export logged a frontend
 * connecting and disconnecting that no operator started. The daemon's own ids and sockets are
 * checked before any probe: the first real frontend is the export's frontend 1.
 */
class RefusedAddProbesNoOwnSocketTest {
    @TempDir
    Path dir;

    @Test
    void aRefusedAddLeavesNoPhantomFrontendOnTheLiveExport() throws Exception {
        List<String> lines = new CopyOnWriteArrayList<>();
        Daemon daemon = new Daemon(Log.to(lines::add));
        Path sock = dir.resolve("a.sock");
        try {
            daemon.call("export.add", Params.json(Map.of("id", "a", "image", "null:1M", "socket", sock.toString())));
            // The same id, and another id on the same socket: both refused, many times (a probe's
            // connection closed before the export accepted it is not seen: the race must be met).
            for (int i = 0; i < 300; i++) {
                assertThrows(RpcError.class, () -> daemon.call("export.add", Params.json(Map.of("id", "a", "image", "null:1M",
                        "socket", sock.toString()))));
                assertThrows(RpcError.class, () -> daemon.call("export.add", Params.json(Map.of("id", "b", "image", "null:1M",
                        "socket", sock.toString()))));
            }
            try (SocketChannel frontend = SocketChannel.open(UnixDomainSocketAddress.of(sock))) {
                assertTrue(frontend.isConnected());
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30); // a hang guard
                while (lines.stream().noneMatch(l -> l.contains(" connected")) && System.nanoTime() < deadline) {
                    Thread.sleep(10);
                }
                // Judged while ours is still connected: once it closes, its own disconnection is logged.
                String first = lines.stream().filter(l -> l.contains(" connected")).findFirst().orElse("(none)");
                assertTrue(first.contains("export a: frontend 1 connected"), "the first frontend the export saw is ours: " + lines);
                assertEquals(List.of(), lines.stream().filter(l -> l.contains("frontend") && l.contains("disconnected")).toList(),
                        "no frontend came and went before ours");
            }
        } finally {
            daemon.close();
        }
    }
}
