package io.vblk.daemon;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.jr.ob.JSON;
import com.fasterxml.jackson.jr.ob.JSONObjectException;

import io.vblk.vhost.Log;

/**
 * JSON-RPC 2.0 framing: one request object per line in, one response object per line out.
 * Whatever a client sends, it gets a response it can read (a notification, a request without
 * an id, gets none, as the specification says) and the daemon goes on. Batches are not
 * supported: a line holding an array is answered with one "invalid request" error.
 */
final class JsonRpc implements ControlServer.LineHandler {
    /** The jackson-jr instance every JSON document of the daemon goes through. */
    static final JSON JSON_OUT = JSON.std.without(JSON.Feature.PRETTY_PRINT_OUTPUT).with(JSON.Feature.WRITE_NULL_PROPERTIES);
    static final JSON JSON_IN = JSON.std.with(JSON.Feature.USE_BIG_DECIMAL_FOR_FLOATS)
            .with(JSON.Feature.FAIL_ON_DUPLICATE_MAP_KEYS);

    private final Daemon daemon;
    private final Log log;

    JsonRpc(Daemon daemon, Log log) {
        this.daemon = daemon;
        this.log = log;
    }

    /** The response line (without newline) for one request line, or null for a notification. */
    @Override
    public String handle(String line) {
        Object id = null;
        try {
            Object parsed;
            try {
                parsed = JSON_IN.anyFrom(line);
            } catch (JSONObjectException e) {
                throw new RpcError(RpcError.PARSE_ERROR, "not valid JSON: " + firstLine(e.getOriginalMessage()));
            } catch (IOException e) {
                throw new RpcError(RpcError.PARSE_ERROR, "not valid JSON: " + firstLine(e.getMessage()));
            }
            if (!(parsed instanceof Map<?, ?> request)) {
                throw new RpcError(RpcError.INVALID_REQUEST, "a request must be one JSON object per line, got "
                        + (parsed instanceof List<?> ? "a list (batches are not supported)" : Params.describe(parsed)));
            }
            Object rawId = request.get("id");
            boolean notification = !request.containsKey("id");
            if (rawId != null && !(rawId instanceof String) && !(rawId instanceof Number)) {
                throw new RpcError(RpcError.INVALID_REQUEST, "\"id\" must be a string, a number or null, got " + Params.describe(rawId));
            }
            id = rawId;
            if (!"2.0".equals(request.get("jsonrpc"))) {
                throw new RpcError(RpcError.INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"");
            }
            if (!(request.get("method") instanceof String method)) {
                throw new RpcError(RpcError.INVALID_REQUEST, "\"method\" must be a string naming a method (methods.list lists them)");
            }
            Object params = request.get("params");
            if (params != null && !(params instanceof Map<?, ?>)) {
                throw new RpcError(RpcError.INVALID_PARAMS, "\"params\" must be an object of named parameters, got "
                        + Params.describe(params));
            }
            for (Object key : request.keySet()) {
                if (!List.of("jsonrpc", "method", "params", "id").contains(key)) {
                    throw new RpcError(RpcError.INVALID_REQUEST, "unknown member \"" + key + "\" in the request");
                }
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> named = (Map<String, Object>) params;
            daemon.awaitStartFor(method);
            Object result = daemon.call(method, Params.rpc(named));
            if (notification) {
                return null;
            }
            Map<String, Object> response = new LinkedHashMap<>();
            response.put("jsonrpc", "2.0");
            response.put("result", result);
            response.put("id", id);
            return JSON_OUT.asString(response);
        } catch (RpcError e) {
            return error(id, e.code, e.getMessage());
        } catch (RuntimeException | IOException e) {
            log.info("control: request failed: " + e);
            return error(id, RpcError.INTERNAL_ERROR, "internal error: " + e.getMessage());
        }
    }

    /**
     * A request for a method that waits for the daemon's start ({@link Daemon#deferUntilStarted}):
     * kept by the control server with no thread held, {@code resume} runs when the start ends.
     * Anything that is not such a request (not JSON, a reporting method) is answered now.
     */
    @Override
    public boolean deferred(String line, Runnable resume) {
        if (daemon.isReady()) {
            return false;
        }
        Object parsed;
        try {
            parsed = JSON_IN.anyFrom(line);
        } catch (IOException | RuntimeException e) {
            return false; // handle() answers the error
        }
        return parsed instanceof Map<?, ?> request && request.get("method") instanceof String method
                && daemon.deferUntilStarted(method, resume);
    }

    /**
     * Why {@code text} (a file, a --json argument) is not JSON: the parser's reason and where,
     * "line L, column C", so a person finds the comma in a long file.
     */
    static String syntaxError(IOException e) {
        String message = String.valueOf(e.getMessage());
        // Jackson ends its message with " at [Source: ...; line: L, column: C]" (the source may be the whole text).
        java.util.regex.Matcher at = LOCATION.matcher(message);
        String where = null;
        while (at.find()) {
            where = " (line " + at.group(1) + ", column " + at.group(2) + ")";
        }
        return firstLine(message) + (where == null ? "" : where);
    }

    private static final java.util.regex.Pattern LOCATION = java.util.regex.Pattern.compile("line: (\\d+), column: (\\d+)\\]");

    private static String firstLine(String s) {
        if (s == null) {
            return "";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    static String error(Object id, int code, String message) {
        Map<String, Object> error = new LinkedHashMap<>();
        error.put("code", code);
        error.put("message", message);
        Map<String, Object> response = new LinkedHashMap<>();
        response.put("jsonrpc", "2.0");
        response.put("error", error);
        response.put("id", id);
        try {
            return JSON_OUT.asString(response);
        } catch (IOException e) {
            return "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":\"internal error\"},\"id\":null}";
        }
    }
}
