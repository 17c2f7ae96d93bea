package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.vhost.Log;

/**
 * irev3, outside review of the control plane's JSON: request lines a hostile (or broken) client
 * sends, each up to the 1 MiB a line may hold. Each gets one error response, fast, and the daemon
 * then answers the next request: nesting deep enough to overflow a recursive parser's stack,
 * numbers whose digits or exponents would make a big-number conversion run for minutes,
 * integers where only small ones fit, bytes that are not UTF-8, and a path where an image is
 * expected that is not a file. The bound on each is a failure guard against a parser stuck for
 * minutes, not a speed measurement.
 */
class HostileJsonAttackTest {
    private static final Duration GUARD = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    private Daemon daemon;
    private JsonRpc rpc;
    private final List<String> log = new ArrayList<>();

    @BeforeEach
    void start() throws Exception {
        daemon = new Daemon(Log.to(line -> {
            synchronized (log) {
                log.add(line);
            }
        }));
        rpc = new JsonRpc(daemon, Log.to(line -> { }));
        Path img = dir.resolve("a.img");
        Files.write(img, new byte[1 << 20]);
        daemon.call("export.add", Params.json(Map.of("id", "a", "image", img.toString(),
                "socket", dir.resolve("a.sock").toString())));
    }

    @AfterEach
    void stop() {
        daemon.close();
    }

    private static String request(String method, String params) {
        return "{\"jsonrpc\":\"2.0\",\"method\":\"" + method + "\",\"params\":" + params + ",\"id\":7}";
    }

    /** The response to {@code line} is an error with {@code code}; the daemon answers a good request next. */
    private void error(String line, int code) {
        String response = assertTimeoutPreemptively(GUARD, () -> rpc.handle(line));
        assertTrue(response.contains("\"error\"") && response.contains("\"code\":" + code),
                "expected error " + code + ", got " + (response.length() > 300 ? response.substring(0, 300) + "..." : response));
        assertTrue(response.length() < 4096 || code == RpcError.METHOD_NOT_FOUND, "a short answer: " + response.length());
        String good = rpc.handle(request("export.stats", "{\"id\":\"a\"}"));
        assertTrue(good.contains("\"result\""), good);
    }

    @Test
    void nestingFarBeyondAnyRealRequestIsRefusedWithoutExhaustingTheStack() {
        int depth = 500_000;
        error("[".repeat(depth) + "]".repeat(depth), RpcError.PARSE_ERROR);
        error("{\"a\":".repeat(depth / 5) + "1" + "}".repeat(depth / 5), RpcError.PARSE_ERROR);
        // Nesting inside params, within what the parser takes, is refused by the schema.
        StringBuilder nested = new StringBuilder();
        for (int i = 0; i < 500; i++) {
            nested.append("{\"x\":");
        }
        nested.append("1").append("}".repeat(500));
        error(request("export.stats", "{\"id\":\"a\",\"deep\":" + nested + "}"), RpcError.INVALID_PARAMS);
        error(request("export.stats", "{\"id\":" + nested + "}"), RpcError.INVALID_PARAMS);
    }

    @Test
    void numbersBuiltToMakeConversionsSlowAreRefused() {
        String digits = "9".repeat(900_000);
        error(request("export.set_limits", "{\"id\":\"a\",\"iops_limit\":" + digits + "}"), RpcError.PARSE_ERROR);
        error(request("export.set_limits", "{\"id\":\"a\",\"iops_limit\":1e999999999}"), RpcError.INVALID_PARAMS);
        error(request("export.set_limits", "{\"id\":\"a\",\"iops_limit\":1e-999999999}"), RpcError.INVALID_PARAMS);
        error(request("export.set_limits", "{\"id\":\"a\",\"bps_limit\":12345678901234567890123}"), RpcError.INVALID_PARAMS);
        error(request("export.resize", "{\"id\":\"a\",\"size\":1e400}"), RpcError.INVALID_PARAMS);
        error(request("export.resize", "{\"id\":\"a\",\"size\":\"99999999999999999999999G\"}"), RpcError.INVALID_PARAMS);
        error(request("iothread.add", "{\"id\":\"t\",\"cpus\":[1e999999999]}"), RpcError.INVALID_PARAMS);
        error(request("iothread.add", "{\"id\":\"t\",\"poll_ns\":-9223372036854775808}"), RpcError.INVALID_PARAMS);
        // The id may be any number: echoed as it came, however large.
        String r = rpc.handle("{\"jsonrpc\":\"2.0\",\"method\":\"methods.list\",\"id\":1e999999999}");
        assertTrue(r.contains("\"result\""), r);
    }

    @Test
    void bytesThatAreNotJsonOrNotUtf8AreAParseError() {
        error("{\"jsonrpc\":\"2.0\",\"method\":\"methods.list\",\"id\":1\u0000}", RpcError.PARSE_ERROR);
        error(new String(new byte[] {'{', '"', (byte) 0xff, (byte) 0xfe, '"', ':', '1', '}'},
                java.nio.charset.StandardCharsets.ISO_8859_1), RpcError.INVALID_REQUEST);
        error("\"" + "x".repeat(900_000) + "\"", RpcError.INVALID_REQUEST);
        error(request("x".repeat(900_000), "{}"), RpcError.METHOD_NOT_FOUND);
    }

    @Test
    void anImageThatIsNoRegularFileIsRefusedAndNothingIsOpened() throws Exception {
        Path fifo = dir.resolve("fifo");
        new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor();
        // A FIFO could block an open(2) or a read until a writer comes, a device file or
        // /proc/self/mem is no disk: each add is refused, with O_DIRECT and without.
        for (String cache : new String[] {"none", "writeback"}) {
            for (String image : new String[] {fifo.toString(), "/dev/zero", "/proc/self/mem", dir.resolve("a.sock").toString()}) {
                error(request("export.add", "{\"id\":\"b\",\"image\":\"" + image + "\",\"cache\":\"" + cache
                        + "\",\"socket\":\"" + dir.resolve("b.sock") + "\"}"), RpcError.INVALID_PARAMS);
            }
        }
        assertEquals(1, ((List<?>) daemon.call("export.list", Params.json(null))).size());
    }
}
