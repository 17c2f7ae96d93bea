package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * Review rev17c: export.add {"image": "null:abc"} answered "--image expects a size ...": an RPC
 * answer names the JSON parameter, as every other of its errors does; the command line keeps
 * naming the flag.
 */
class RpcErrorNamesParameterTest {
    @TempDir
    Path dir;

    @Test
    void aBadNullSizeNamesTheJsonParameterInAnRpcAnswer() {
        Daemon daemon = new Daemon(Log.to(line -> { }));
        try {
            RpcError e = assertThrows(RpcError.class, () -> daemon.call("export.add", Params.json(Map.of("id", "a",
                    "image", "null:abc", "socket", dir.resolve("a.sock").toString()))));
            assertEquals(RpcError.INVALID_PARAMS, e.code);
            assertTrue(e.getMessage().startsWith("image expects a size"), e.getMessage());
        } finally {
            daemon.close();
        }
        InvalidParams cli = assertThrows(InvalidParams.class, () -> ExportSpec.parse(Params.commandLine(Map.of("id", "a",
                "image", "null:abc", "socket", dir.resolve("a.sock").toString())), null));
        assertTrue(cli.getMessage().startsWith("--image expects a size"), cli.getMessage());
    }
}
