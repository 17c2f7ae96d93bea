package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;

import io.vblk.aio.BounceBudget;

/** Issue 10: the per-device bounce budget is an export option ({@code --bounce-budget}, {@code bounce_budget}). */
class BounceBudgetOptionTest {
    private static ExportSpec parse(String... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), "disk0");
    }

    @Test
    void theBounceBudgetIsAnOptionWithAFloorOfOneLargestTransfer() {
        assertEquals(BounceBudget.DEFAULT_BYTES, parse("image", "x.img", "socket", "s").bounceBudget);
        ExportSpec small = parse("image", "x.img", "socket", "s", "bounce_budget", "8M");
        assertEquals(8L << 20, small.bounceBudget);
        assertEquals(8L << 20, small.toParams().get("bounce_budget"));
        InvalidParams tooSmall = assertThrows(InvalidParams.class,
                () -> parse("image", "x.img", "socket", "s", "bounce_budget", "1M"));
        assertTrue(tooSmall.getMessage().contains("bounce"), tooSmall.getMessage());
    }

    @Test
    void theServeCommandLineCarriesIt() {
        ExportOptions o = new ExportOptions();
        o.bounceBudget = "16M";
        assertEquals("16M", o.toParams().get("bounce_budget"));
    }
}
