package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;

import io.vblk.vhost.VhostUserServer;

/**
 * rev15b: the per-export guest-memory cap is an export option ({@code --max-guest-memory},
 * {@code max_guest_memory}), 1 TiB by default, 1 MiB to 16 TiB, listed and saved.
 */
class MaxGuestMemoryOptionTest {
    private static ExportSpec parse(String... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), "disk0");
    }

    @Test
    void theCapIsAnOptionWithADefaultAndBounds() {
        assertEquals(VhostUserServer.DEFAULT_MAX_GUEST_MEMORY, parse("image", "x.img", "socket", "s").maxGuestMemory);
        assertEquals(1L << 40, VhostUserServer.DEFAULT_MAX_GUEST_MEMORY);
        ExportSpec small = parse("image", "x.img", "socket", "s", "max_guest_memory", "64G");
        assertEquals(64L << 30, small.maxGuestMemory);
        assertEquals(64L << 30, small.toParams().get("max_guest_memory"));
        assertEquals(64L << 30, small.toConfig().get("max_guest_memory"));
        InvalidParams tooSmall = assertThrows(InvalidParams.class,
                () -> parse("image", "x.img", "socket", "s", "max_guest_memory", "4K"));
        assertTrue(tooSmall.getMessage().contains("max-guest-memory"), tooSmall.getMessage());
        InvalidParams tooLarge = assertThrows(InvalidParams.class,
                () -> parse("image", "x.img", "socket", "s", "max_guest_memory", "17T"));
        assertTrue(tooLarge.getMessage().contains("max-guest-memory"), tooLarge.getMessage());
    }

    @Test
    void theServeCommandLineCarriesIt() {
        ExportOptions o = new ExportOptions();
        o.maxGuestMemory = "2T";
        assertEquals("2T", o.toParams().get("max_guest_memory"));
    }
}
