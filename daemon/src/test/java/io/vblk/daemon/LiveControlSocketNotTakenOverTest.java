package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * Review rev11b: a second {@code vblk daemon} started with the control socket of a daemon that still
 * runs (a restart while the old one drains, two units pointing at one path, an operator's
 * mistake) deletes the live socket file and binds its own (SocketFile.listen replaces any socket,
 * stale or not; DaemonCommand checks no liveness, unlike export.add). The first daemon keeps
 * serving its exports but can never be reached again: no export.remove, no daemon.shutdown, and
 * once the second exits even the path is gone. Expected: the second is refused ("in use") and
 * the first stays reachable.
 */
class LiveControlSocketNotTakenOverTest {
    @TempDir
    Path dir;

    @Test
    void aSecondDaemonDoesNotStealALiveControlSocket() throws Exception {
        Path control = dir.resolve("control.sock");
        Log log = Log.to(line -> { });
        ControlThreads threads = new ControlThreads(log);
        ControlServer first = new ControlServer(control, SocketFile.DEFAULT_MODE, null, null, line -> "first", log, threads);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        AtomicInteger status = new AtomicInteger(-1);
        Thread second = new Thread(() -> status.set(Main.run(new String[] {"daemon", "--control", control.toString()},
                new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8), false)),
                "second-daemon");
        second.start();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (second.isAlive() && !out.toString(StandardCharsets.UTF_8).contains("listening") && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            try (SocketChannel ch = ControlSocket.connect(control)) {
                ControlSocket.sendLine(ch, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.version\",\"id\":1}");
                assertEquals("first", ControlSocket.readLine(ch), "the running daemon's control socket was taken over by a second"
                        + " daemon (its stdout: " + out.toString(StandardCharsets.UTF_8).trim() + ")");
            }
            second.join(TimeUnit.SECONDS.toMillis(20));
            assertFalse(second.isAlive(), "the second daemon should have refused to start");
        } finally {
            if (second.isAlive()) {
                try (SocketChannel ch = ControlSocket.connect(control)) {
                    ControlSocket.sendLine(ch, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.shutdown\",\"id\":1}");
                    ControlSocket.readLine(ch);
                }
                second.join(TimeUnit.SECONDS.toMillis(60));
            }
            first.close();
            threads.close();
        }
    }
}
