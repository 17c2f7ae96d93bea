package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
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
 * Session 17: {@code vblk stat} showed one MB/s of every request's bytes (discarded ranges too).
 * It now shows rMB/s and wMB/s from {@code export.stats}' read_bytes and write_bytes, as
 * {@code iostat -x} does. A scripted control socket answers an export that only reads between
 * the two samples (and discards a large range): its rMB/s is above zero, its wMB/s zero.
 */
class StatBytesByDirectionTest {
    private static final Pattern ID = Pattern.compile("\"id\":(\\d+)");

    @TempDir
    Path dir;

    private static String queue(long completions, long read, long bytes) {
        try {
            return JsonRpc.JSON_OUT.asString(Map.of("queues", List.of(Map.of("queue", 0, "completions", completions,
                "bytes", bytes, "read_bytes", read, "write_bytes", 4096L, "in_flight", 0, "state", "running",
                "latency", Map.of("p50_us", 1, "p99_us", 2, "max_us", 3)))));
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    @Test
    void readsShowInReadMegabytesOnly() throws Exception {
        AtomicInteger statsCalls = new AtomicInteger();
        ControlServer.LineHandler scripted = line -> {
            Matcher m = ID.matcher(line);
            String id = m.find() ? m.group(1) : "null";
            String result;
            if (line.contains("\"export.list\"")) {
                result = "[{\"id\":\"a\"}]";
            } else if (statsCalls.getAndIncrement() == 0) {
                result = queue(1, 0, 4096);
            } else {
                result = queue(1001, 64L << 20, 4096 + (64L << 20) + (1L << 40)); // 64 MiB read, 1 TiB discarded
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
            List<String> header = text.lines().filter(l -> l.startsWith("export ")).toList();
            assertEquals(1, header.size(), text);
            List<String> columns = List.of(header.get(0).trim().split("\\s+"));
            int r = columns.indexOf("rMB/s");
            int w = columns.indexOf("wMB/s");
            assertTrue(r > 0 && w > 0, "rMB/s and wMB/s columns: " + text);
            String[] row = text.lines().filter(l -> l.startsWith("a ")).findFirst().orElseThrow().trim().split("\\s+");
            assertTrue(Double.parseDouble(row[r]) > 0, "the reads' MB/s: " + text);
            assertEquals(0.0, Double.parseDouble(row[w]), "nothing written meanwhile, whatever was discarded: " + text);
        } finally {
            server.close();
            threads.close();
        }
    }
}
