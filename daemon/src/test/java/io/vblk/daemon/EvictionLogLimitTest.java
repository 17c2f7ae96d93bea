package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * Review rev17c: with the control clients at their bound, each new connection closes the one
 * idle longest and logged a line: a client connecting in a loop wrote one line per connect. They
 * are limited as a frontend's connect lines are (10 a minute), the rest counted and told at close.
 */
class EvictionLogLimitTest {
    @TempDir
    Path dir;

    @Test
    void evictionLinesAreRateLimited() throws Exception {
        List<String> lines = new CopyOnWriteArrayList<>();
        Log log = Log.to(lines::add);
        ControlThreads threads = new ControlThreads(log);
        ControlServer server = new ControlServer(dir.resolve("control.sock"), SocketFile.DEFAULT_MODE, null, null,
                line -> "pong", log, threads);
        List<SocketChannel> clients = new ArrayList<>();
        int extra = 40;
        try {
            for (int i = 0; i < ControlServer.MAX_CLIENTS + extra; i++) {
                SocketChannel ch = ControlSocket.connect(server.path());
                clients.add(ch);
                ControlSocket.sendLine(ch, "ping");
                ControlSocket.readLine(ch); // answered: accepted (evicting the one idle longest past the bound)
            }
        } finally {
            server.close();
            threads.close();
            for (SocketChannel ch : clients) {
                ch.close();
            }
        }
        long evictions = lines.stream().filter(l -> l.contains("closed the one idle longest")).count();
        assertEquals(ControlServer.EVICTION_LINES, evictions, String.join("\n", lines));
        assertTrue(lines.stream().anyMatch(l -> l.contains((extra - ControlServer.EVICTION_LINES) + " more clients closed")),
                String.join("\n", lines));
    }
}
