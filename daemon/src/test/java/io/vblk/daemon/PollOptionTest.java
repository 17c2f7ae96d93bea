package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;

import io.vblk.engine.Tuning;

/** {@code --poll-max-us} of {@code vblk serve} / {@code poll_max_us} of {@code export.add}. */
class PollOptionTest {
    private static ExportSpec parse(String... keyValues) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) {
            m.put(keyValues[i], keyValues[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), "disk0");
    }

    @Test
    void defaultsToTheEngineDefaultAndIsReported() {
        ExportSpec s = parse("image", "null:1M", "socket", "s");
        assertEquals(Tuning.defaults().pollMaxNs() / 1000, s.pollMaxUs);
        assertEquals(s.pollMaxUs, s.toParams().get("poll_max_us"));
    }

    @Test
    void takesAValueFromZeroToOneSecond() {
        assertEquals(250, parse("image", "null:1M", "socket", "s", "poll_max_us", "250").pollMaxUs);
        assertEquals(0, parse("image", "null:1M", "socket", "s", "poll_max_us", "0").pollMaxUs);
        InvalidParams e = assertThrows(InvalidParams.class,
                () -> parse("image", "null:1M", "socket", "s", "poll_max_us", "-1"));
        assertTrue(e.getMessage().contains("poll"), e.getMessage());
        assertThrows(InvalidParams.class, () -> parse("image", "null:1M", "socket", "s", "poll_max_us", "2000000"));
    }
}
