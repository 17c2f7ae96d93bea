package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;
import io.vblk.vhost.SocketFile;

/**
 * Review rev11b: {@code vblk stat} kept the counters of every export id it ever saw and took the rate
 * of an id from its last counters whatever happened since: an export removed and added again
 * under the same id starts its counters from zero, and stat printed a negative IOPS and MB/s.
 * Here a scripted control socket answers export a with 1000 completions, then (re-added) with 10.
 */
class StatReaddedExportRateTest {
    private static final Pattern ID = Pattern.compile("\"id\":(\\d+)");

    @TempDir
    Path dir;

    private static String queue(long completions) {
        try {
            return JsonRpc.JSON_OUT.asString(Map.of("queues", List.of(Map.of("queue", 0, "completions", completions,
                "bytes", completions * 4096, "in_flight", 0, "state", "running",
                "latency", Map.of("p50_us", 1, "p99_us", 2, "max_us", 3)))));
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    @Test
    void aReaddedExportShowsNoNegativeRate() throws Exception {
        AtomicInteger statsCalls = new AtomicInteger();
        ControlServer.LineHandler scripted = line -> {
            Matcher m = ID.matcher(line);
            String id = m.find() ? m.group(1) : "null";
            String result;
            if (line.contains("\"export.list\"")) {
                result = "[{\"id\":\"a\"}]";
            } else {
                result = queue(statsCalls.getAndIncrement() == 0 ? 1000 : 10); // removed and added again
            }
            return "{\"jsonrpc\":\"2.0\",\"result\":" + result + ",\"id\":" + id + "}";
        };
        Log log = Log.to(l -> { });
        ControlThreads threads = new ControlThreads(log);
        ControlServer server = new ControlServer(dir.resolve("control.sock"), SocketFile.DEFAULT_MODE, null, null, scripted, log,
                threads);
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int status = Main.run(new String[] {"stat", "--control", server.path().toString(), "--count", "1", "--interval", "0.1"},
                    new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8), false);
            String text = out.toString(StandardCharsets.UTF_8);
            assertEquals(0, status, text + err.toString(StandardCharsets.UTF_8));
            assertTrue(text.lines().anyMatch(l -> l.startsWith("a ")), text);
            assertFalse(text.lines().filter(l -> l.startsWith("a ")).anyMatch(l -> l.contains(" -")), "a negative rate:\n" + text);
        } finally {
            server.close();
            threads.close();
        }
    }
}
