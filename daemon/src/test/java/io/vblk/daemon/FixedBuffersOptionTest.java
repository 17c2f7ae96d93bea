package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;

import io.vblk.aio.FixedBufferMode;

/** {@code --fixed-buffers} of {@code vblk serve} / {@code fixed_buffers} of {@code export.add}. */
class FixedBuffersOptionTest {
    private static ExportSpec parse(String... keyValues) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) {
            m.put(keyValues[i], keyValues[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), "disk0");
    }

    @Test
    void defaultsToAutoAndIsReported() {
        ExportSpec s = parse("image", "null:1M", "socket", "s");
        assertEquals(FixedBufferMode.AUTO, s.fixedBuffers);
        assertEquals("auto", s.toParams().get("fixed_buffers"));
    }

    @Test
    void takesAutoOnOrOff() {
        assertEquals(FixedBufferMode.ON, parse("image", "null:1M", "socket", "s", "fixed_buffers", "on").fixedBuffers);
        assertEquals(FixedBufferMode.OFF, parse("image", "null:1M", "socket", "s", "fixed_buffers", "OFF").fixedBuffers);
        InvalidParams e = assertThrows(InvalidParams.class,
                () -> parse("image", "null:1M", "socket", "s", "fixed_buffers", "always"));
        assertTrue(e.getMessage().contains("fixed"), e.getMessage());
    }

    @Test
    void theServeOptionBecomesTheParameter() {
        ExportOptions o = new ExportOptions();
        new picocli.CommandLine(o).parseArgs("--fixed-buffers", "off");
        assertEquals("off", o.toParams().get("fixed_buffers"));
    }
}
