package io.vblk.daemon;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;
import picocli.CommandLine.Unmatched;

/**
 * {@code vblk ctl}: calls one method of a running daemon and prints the result, as a table for
 * people or, with {@code --json}, as the JSON the daemon sent.
 */
@Command(name = "ctl", mixinStandardHelpOptions = true, versionProvider = Version.class,
        description = {"Calls METHOD on the daemon at --control and prints the result. Parameters are --name value "
            + "pairs (--queue-size and --queue_size are the same; a value that is JSON, such as 4, true or [\"a\"], is "
            + "sent as that JSON, anything else as a string), or one JSON object with --json '{...}'.",
            "",
            "File names (image, socket, path, ...) are made absolute against this command's working directory.",
            "",
            "Examples (C=/run/vblk.sock):",
            "  vblk ctl --control $C export.add --id d1 --image d1.raw --socket /run/d1.sock",
            "  vblk ctl --control $C export.stats --id d1 --json",
            "  vblk ctl --control $C methods.list",
            "  vblk ctl --control $C config.save --path /etc/vblk/vblk.json"},
        footer = {"", "Exit status: 0 on a result, 1 when the daemon answers with an error or cannot be reached, 2 for a "
            + "bad argument."})
final class CtlCommand implements Callable<Integer> {
    @ParentCommand
    Main parent;

    @Option(names = "--control", paramLabel = "PATH", required = true, description = "the daemon's control socket")
    Path control;

    @Option(names = "--json", arity = "0..1", paramLabel = "PARAMS", fallbackValue = "", description = "print the "
            + "result as JSON; with a value, also take the parameters from that JSON object (the result is JSON then too)")
    String json;

    @Parameters(index = "0", paramLabel = "METHOD", description = "a method, e.g. export.list (methods.list lists them)")
    String method;

    @Unmatched
    List<String> rest = new ArrayList<>();

    @Override
    public Integer call() throws IOException {
        PrintStream out = parent.context.out();
        PrintStream err = parent.context.err();
        Map<String, Object> params = params();
        Object result;
        try (ControlClient client = ControlClient.connect(control)) {
            result = client.result(method, params);
        } catch (RpcError e) {
            err.println("vblk ctl: " + method + ": " + e.getMessage() + " (error " + e.code + ")");
            // Invalid params (an unknown parameter, a file that is no disk) and an unknown method
            // are the caller's mistake: a bad argument's 2, as serve and daemon answer it (README).
            return e.code == RpcError.INVALID_PARAMS || e.code == RpcError.METHOD_NOT_FOUND ? 2 : 1;
        } catch (IOException e) {
            err.println("vblk ctl: cannot reach the daemon at " + control + ": " + e.getMessage() + ControlClient.staleHint(control, e));
            return 1;
        }
        if (json != null) {
            out.println(JsonRpc.JSON_OUT.asString(result));
        } else {
            Tables.print(out, result);
        }
        out.flush();
        return 0;
    }

    @SuppressWarnings("unchecked")
    private Map<String, Object> params() {
        Map<String, Object> params = new LinkedHashMap<>();
        if (json != null && !json.isEmpty()) {
            Object parsed;
            try {
                parsed = JsonRpc.JSON_IN.anyFrom(json);
            } catch (IOException e) {
                throw new InvalidParams("--json: not valid JSON: " + JsonRpc.syntaxError(e));
            }
            if (!(parsed instanceof Map<?, ?>)) {
                throw new InvalidParams("--json: the parameters must be one JSON object");
            }
            params.putAll((Map<String, Object>) parsed);
        }
        for (int i = 0; i < rest.size(); i++) {
            String arg = rest.get(i);
            if (!arg.startsWith("--") || arg.length() == 2) {
                throw new InvalidParams("unexpected argument '" + arg + "' (parameters are --name value)");
            }
            String name = arg.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else if (i + 1 < rest.size() && !rest.get(i + 1).startsWith("--")) {
                value = rest.get(++i);
            } else {
                value = "true"; // a flag such as --read-only
            }
            params.put(name.replace('-', '_'), value(value));
        }
        absolutePaths(params);
        return params.isEmpty() && (json == null || json.isEmpty()) ? null : params;
    }

    /**
     * Parameters that name files (export.add's image, socket, backing_dir and tls_certificates,
     * config.save's path): the daemon refuses relative names, since it would take them against
     * its own working directory and serve another disk.
     */
    static final Set<String> PATH_KEYS = Set.of("image", "socket", "backing_dir", "tls_certificates", "path");

    /** Makes every file name of {@code params} absolute against ctl's own working directory. */
    private static void absolutePaths(Map<String, Object> params) {
        for (String key : PATH_KEYS) {
            if (!(params.get(key) instanceof String name) || name.isEmpty()) {
                continue;
            }
            if (key.equals("image") && (name.startsWith(ExportSpec.NULL_PREFIX) || io.vblk.block.NetworkDisk.isAddress(name))) {
                continue; // null:SIZE, nbd://, nbds://, rbd: name no file
            }
            try {
                params.put(key, Path.of(name).toAbsolutePath().toString());
            } catch (java.nio.file.InvalidPathException e) {
                // not a file name at all: the daemon says what is wrong with it
            }
        }
    }

    /** A value as JSON when it is JSON (a number, true, a list, ...), else as the string typed. */
    private static Object value(String text) {
        try {
            Object v = JsonRpc.JSON_IN.anyFrom(text);
            if (v != null) {
                return v;
            }
        } catch (IOException | RuntimeException e) {
            // not JSON: a string
        }
        return text;
    }

    /** Prints results for people: a list of objects as a table, an object as name: value lines. */
    static final class Tables {
        private Tables() {
        }

        static void print(PrintStream out, Object result) {
            if (result instanceof List<?> list && !list.isEmpty() && list.stream().allMatch(o -> o instanceof Map<?, ?>)) {
                table(out, list);
            } else if (result instanceof List<?> list) {
                for (Object o : list) {
                    out.println(flat(o));
                }
            } else if (result instanceof Map<?, ?> map) {
                for (Map.Entry<?, ?> e : map.entrySet()) {
                    if (e.getValue() instanceof List<?> l && !l.isEmpty() && l.stream().allMatch(o -> o instanceof Map<?, ?>)) {
                        out.println(e.getKey() + ":");
                        table(out, l);
                    } else {
                        out.println(e.getKey() + ": " + flat(e.getValue()));
                    }
                }
            } else {
                out.println(flat(result));
            }
        }

        private static void table(PrintStream out, List<?> rows) {
            List<Map<String, Object>> flatRows = new ArrayList<>();
            for (Object row : rows) {
                Map<String, Object> m = new LinkedHashMap<>();
                flatten("", (Map<?, ?>) row, m);
                flatRows.add(m);
            }
            rows = flatRows;
            Set<String> columns = new LinkedHashSet<>();
            for (Object row : rows) {
                for (Object k : ((Map<?, ?>) row).keySet()) {
                    columns.add(String.valueOf(k));
                }
            }
            List<String> cols = new ArrayList<>(columns);
            List<String[]> cells = new ArrayList<>();
            cells.add(cols.toArray(new String[0]));
            for (Object row : rows) {
                String[] line = new String[cols.size()];
                for (int i = 0; i < line.length; i++) {
                    line[i] = flat(((Map<?, ?>) row).get(cols.get(i)));
                }
                cells.add(line);
            }
            int[] width = new int[cols.size()];
            for (String[] line : cells) {
                for (int i = 0; i < line.length; i++) {
                    width[i] = Math.max(width[i], line[i].length());
                }
            }
            for (String[] line : cells) {
                StringBuilder sb = new StringBuilder();
                for (int i = 0; i < line.length; i++) {
                    sb.append(String.format("%-" + width[i] + "s", line[i]));
                    if (i + 1 < line.length) {
                        sb.append("  ");
                    }
                }
                out.println(sb.toString().stripTrailing());
            }
        }

        /** A row's nested objects as columns of their own: export.stats' latency {p50_us, ...} as latency.p50_us, .... */
        private static void flatten(String prefix, Map<?, ?> row, Map<String, Object> out) {
            for (Map.Entry<?, ?> e : row.entrySet()) {
                String name = prefix + e.getKey();
                if (e.getValue() instanceof Map<?, ?> inner) {
                    flatten(name + ".", inner, out);
                } else {
                    out.put(name, e.getValue());
                }
            }
        }

        private static String flat(Object v) {
            if (v == null) {
                return "-";
            }
            if (v instanceof Map<?, ?> || v instanceof List<?>) {
                try {
                    return JsonRpc.JSON_OUT.asString(v);
                } catch (IOException e) {
                    return String.valueOf(v);
                }
            }
            return String.valueOf(v);
        }
    }
}
