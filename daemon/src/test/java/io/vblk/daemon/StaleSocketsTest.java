package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.UnixSocket;

/**
 * Review rev17c: after a kill -9 during export.add or export.remove the export's socket file
 * stays on disk with no entry naming it, and a restart never said so. The start reports, in one
 * line, the socket files beside the configured sockets that no entry names and nobody listens on
 * (read from /proc/net/unix), and leaves them in place.
 */
class StaleSocketsTest {
    @TempDir
    Path dir;

    /** A socket file whose listener has gone (as after a kill -9): bound, then closed without removing it. */
    private Path stale(String name) {
        Path p = dir.resolve(name);
        UnixSocket.listen(p, 1).close();
        return p;
    }

    @Test
    void reportsOnlyUnnamedSocketFilesNobodyListensOn() throws Exception {
        Path named = stale("named.sock");
        Path left = stale("left.sock");
        Path control = stale("control.sock");
        Files.writeString(dir.resolve("note.txt"), "not a socket");
        UnixSocket live = UnixSocket.listen(dir.resolve("live.sock"), 1);
        try {
            String line = StaleSockets.report(List.of(named), control);
            assertNotNull(line);
            assertTrue(line.startsWith("1 socket file "), line);
            assertTrue(line.endsWith(": " + left), line);
            assertTrue(Files.exists(left), "left in place");
        } finally {
            live.close();
        }
    }

    @Test
    void listsAtMostTenAndCountsTheRest() throws Exception {
        for (int i = 0; i < 12; i++) {
            stale("s" + i + ".sock");
        }
        String line = StaleSockets.report(List.of(dir.resolve("named.sock")), dir.resolve("control.sock"));
        assertTrue(line.startsWith("12 socket files "), line);
        assertTrue(line.endsWith(" and 2 more"), line);
        assertEquals(10, line.split(dir.toString()).length - 1, line);
    }

    @Test
    void nothingWhenEveryoneIsNamed() {
        Path named = stale("named.sock");
        assertNull(StaleSockets.report(List.of(named), dir.resolve("control.sock")));
    }
}
