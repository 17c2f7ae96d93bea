package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * Review rev17c: export.add took ids such as "--" or "-x", which read as options on every
 * command line that names them afterwards (vblk ctl, vblk stat --id). A new export's or I/O
 * thread's id must begin with a letter or a digit; an entry of a file written before the rule
 * still loads.
 */
class OptionLikeIdTest {
    @TempDir
    Path dir;

    @Test
    void anIdBeginningWithADashIsRefusedOnAddAndLoadedFromAFile() {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        try {
            for (String id : List.of("--", "-x", ".a", "_a")) {
                RpcError e = assertThrows(RpcError.class, () -> daemon.call("export.add", Params.json(Map.of("id", id,
                        "image", "null:1M", "socket", dir.resolve("x.sock").toString()))), id);
                assertEquals(RpcError.INVALID_PARAMS, e.code, e.getMessage());
                assertTrue(e.getMessage().contains("must begin with a letter or a digit"), e.getMessage());
                assertThrows(RpcError.class, () -> daemon.call("iothread.add", Params.json(Map.of("id", id))), id);
            }
            daemon.call("export.add", Params.json(Map.of("id", "0a", "image", "null:1M", "socket", dir.resolve("a.sock").toString())));
            // A persisted entry of an older daemon.
            assertNull(daemon.applyOrKeep(false, Map.of("id", "-t")));
            assertNull(daemon.applyOrKeep(true, Map.of("id", "-old", "image", "null:1M", "socket", dir.resolve("o.sock").toString())));
            assertEquals(2, ((List<?>) daemon.call("export.list", Params.json(null))).size());
        } finally {
            daemon.close();
        }
    }
}
