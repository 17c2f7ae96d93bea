package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * Review rev17c: {@code vblk stat --id nothere} printed its header, then the error, and exited 1,
 * the status the README gives for a daemon that cannot be reached. An id the daemon has no
 * export of is a bad argument, as ctl treats it: status 2, one line on stderr, nothing on stdout.
 */
class StatUnknownIdTest {
    @TempDir
    Path dir;

    @Test
    void anUnknownIdIsABadArgumentWithNothingPrinted() throws Exception {
        Path control = dir.resolve("control.sock");
        Log log = Log.to(line -> { });
        Daemon daemon = new Daemon(log);
        ControlServer server = new ControlServer(control, SocketFile.DEFAULT_MODE, null, null, new JsonRpc(daemon, log), log,
                daemon.controlThreads());
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int status = Main.run(new String[] {"stat", "--control", control.toString(), "--id", "nothere", "--count", "1"},
                    new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8), false);
            String e = err.toString(StandardCharsets.UTF_8);
            assertEquals(2, status, e);
            assertEquals("", out.toString(StandardCharsets.UTF_8), "no header before the error");
            assertTrue(e.contains("nothere"), e);
        } finally {
            server.close();
            daemon.close();
        }
    }
}
