package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Collections;
import java.util.HashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;

/**
 * rev13b: every list and string an export keeps is bounded, since each is written to the
 * configuration file, which a restart reads only up to 16 MiB: one 1 MiB request line of
 * allow_uids must not make a tenth of it. The caps are named in the refusal; the cap itself is
 * taken.
 */
class ExportParamsBoundsTest {
    private static ExportSpec parse(Object... more) {
        Map<String, Object> m = new HashMap<>(Map.of("id", "e", "image", "null:1M", "socket", "/run/vblk/e.sock"));
        for (int i = 0; i < more.length; i += 2) {
            m.put((String) more[i], more[i + 1]);
        }
        return ExportSpec.parse(Params.json(m), null);
    }

    private static void refused(String expected, Object... more) {
        InvalidParams e = assertThrows(InvalidParams.class, () -> parse(more));
        assertTrue(e.getMessage().contains(expected), e.getMessage());
    }

    @Test
    void allowUidsTakeAtMost1024() {
        assertEquals(1024, parse("allow_uids", Collections.nCopies(1024, 7)).allowUids.length);
        refused("allow_uids takes at most 1024 items, got 1025", "allow_uids", Collections.nCopies(1025, 7));
        refused("allow_uids takes at most 1024 items, got 340000", "allow_uids", Collections.nCopies(340_000, 0));
    }

    @Test
    void iothreadsTakeAtMostOnePerQueue() {
        assertEquals(64, parse("iothreads", Collections.nCopies(64, "t0")).iothreads.size());
        refused("iothreads takes at most 64 items, got 65", "iothreads", Collections.nCopies(65, "t0"));
    }

    @Test
    void stringsAreBounded() {
        String path = "/" + "p".repeat(4095);
        refused("image must be at most 4096 characters", "image", path + "x");
        refused("socket must be at most 4096 characters", "socket", path + "x");
        refused("backing_dir must be at most 4096 characters", "backing_dir", path + "x");
        refused("tls_certificates must be at most 4096 characters", "tls_certificates", path + "x");
        refused("socket_group must be at most 256 characters", "socket_group", "g".repeat(257));
        assertEquals("g".repeat(256), parse("socket_group", "g".repeat(256)).socketGroup);
        refused("tls_hostname must be at most 253 characters", "tls_hostname", "h".repeat(254));
        refused("serial must be at most 20", "serial", "s".repeat(21));
    }

    @Test
    void theCommandLineListsAreBoundedToo() {
        String uids = String.join(",", Collections.nCopies(1025, "7"));
        InvalidParams e = assertThrows(InvalidParams.class, () -> ExportSpec.parse(Params.commandLine(
                Map.of("image", "null:1M", "socket", "/run/vblk/e.sock", "allow_uids", uids)), "serve"));
        assertTrue(e.getMessage().contains("--allow-uids takes at most 1024 items"), e.getMessage());
    }
}
