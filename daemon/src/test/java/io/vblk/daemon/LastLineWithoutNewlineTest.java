package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * Review rev17c: a request line without its trailing newline, followed by the end of the
 * client's sending side ({@code printf '{...}' | socat - UNIX:ctl.sock}), got no answer: the
 * partial line was dropped when the stream ended. It is answered as if the newline had come.
 */
class LastLineWithoutNewlineTest {
    @TempDir
    Path dir;

    @Test
    void aLastLineWithoutNewlineIsAnswered() throws Exception {
        Path control = dir.resolve("control.sock");
        Log log = Log.to(line -> { });
        ControlThreads threads = new ControlThreads(log);
        ControlServer server = new ControlServer(control, SocketFile.DEFAULT_MODE, null, null, line -> "got " + line.strip(), log,
                threads);
        try (SocketChannel ch = ControlSocket.connect(control)) {
            ControlSocket.sendLine(ch, "first");
            assertEquals("got first", ControlSocket.readLine(ch));
            ControlSocket.send(ch, "last".getBytes(StandardCharsets.UTF_8));
            ch.shutdownOutput();
            assertEquals("got last", ControlSocket.readLine(ch));
        } finally {
            server.close();
            threads.close();
        }
    }
}
