package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

import io.vblk.vhost.Log;
import picocli.CommandLine;

/**
 * rev16c F2: the process-wide guest-memory budget is an option of {@code vblk daemon} and
 * {@code vblk serve} ({@code --guest-memory-budget SIZE}; unset: the host's memory or its cgroup's
 * limit, vhost VhostUserServer.guestMemoryBudget), and an export left at the default per-export
 * cap is said once, naming the option that divides the budget.
 */
class GuestMemoryBudgetOptionTest {
    @Test
    void bothCommandsTakeTheBudget() {
        DaemonCommand daemon = new DaemonCommand();
        new CommandLine(daemon).parseArgs("--control", "c.sock", "--guest-memory-budget", "8G");
        assertEquals(8L << 30, daemon.guestMemoryBudget);
        ServeCommand serve = new ServeCommand();
        new CommandLine(serve).parseArgs("--image", "x.img", "--socket", "s", "--guest-memory-budget", "512M");
        assertEquals(512L << 20, serve.guestMemoryBudget);
        DaemonCommand unset = new DaemonCommand();
        new CommandLine(unset).parseArgs("--control", "c.sock");
        assertNull(unset.guestMemoryBudget);
    }

    @Test
    void anExportLeftAtTheDefaultCapIsSaidOnce() throws Exception {
        java.lang.reflect.Field warned = Export.class.getDeclaredField("DEFAULT_CAP_WARNED");
        warned.setAccessible(true);
        ((java.util.concurrent.atomic.AtomicBoolean) warned.get(null)).set(false);
        List<String> lines = new ArrayList<>();
        Log log = Log.to(lines::add);
        Export.warnDefaultCap(parse("image", "x.img", "socket", "s", "max_guest_memory", "8G"), log);
        assertTrue(lines.isEmpty(), "a cap set: nothing to say " + lines);
        Export.warnDefaultCap(parse("image", "x.img", "socket", "s"), log);
        Export.warnDefaultCap(parse("image", "y.img", "socket", "t"), log);
        assertEquals(1, lines.size(), lines.toString());
        assertTrue(lines.get(0).contains("max_guest_memory") && lines.get(0).contains("--guest-memory-budget"), lines.get(0));
    }

    private static ExportSpec parse(String... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), "disk0");
    }
}
