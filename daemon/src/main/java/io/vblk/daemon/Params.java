package io.vblk.daemon;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Typed, checked access to the parameters of one method call. The same schema comes from three
 * places: a JSON-RPC request, the daemon's configuration file (both JSON: numbers are numbers,
 * booleans are booleans) and the command line (everything is the text the user typed, and names
 * are shown as {@code --queue-size} rather than {@code queue_size}). Every mistake becomes an
 * {@link InvalidParams} that names the parameter and the offending value.
 */
final class Params {
    private final Map<String, Object> values;
    private final boolean commandLine;
    /** From a control socket client, whose working directory is not the daemon's (see {@link #rpc}). */
    private final boolean remote;

    private Params(Map<String, Object> values, boolean commandLine) {
        this(values, commandLine, false);
    }

    private Params(Map<String, Object> values, boolean commandLine, boolean remote) {
        this.values = values;
        this.commandLine = commandLine;
        this.remote = remote;
    }

    /** Parameters decoded from JSON (a missing "params" is an empty object). */
    static Params json(Map<String, Object> values) {
        return new Params(values == null ? Map.of() : values, false);
    }

    /**
     * Parameters of a JSON-RPC request: as {@link #json}, from a client whose working directory
     * is not the daemon's, so a relative file name would name another file ({@link #remote}).
     */
    static Params rpc(Map<String, Object> values) {
        return new Params(values == null ? Map.of() : values, false, true);
    }

    /** Whether these parameters came over the control socket: file names in them must be absolute. */
    boolean remote() {
        return remote;
    }

    /** Parameters as typed on a command line: strings, or {@link Boolean#TRUE} for a flag. */
    static Params commandLine(Map<String, Object> values) {
        return new Params(values, true);
    }

    /** {@code values} read as these are: their names in messages are flags or JSON keys alike. */
    Params sameKind(Map<String, Object> values) {
        return new Params(values, commandLine, remote);
    }

    /** How {@code key} is spelt where these parameters came from, for messages. */
    String name(String key) {
        return commandLine ? "--" + key.replace('_', '-') : key;
    }

    /** The parameters as given (read-only), for a record of what made an object (config.save). */
    Map<String, Object> values() {
        return java.util.Collections.unmodifiableMap(values);
    }

    boolean isString(String key) {
        return values.get(key) instanceof String;
    }

    boolean has(String key) {
        return values.get(key) != null;
    }

    /** Refuses any parameter not in {@code known}: a typo must not be silently ignored. */
    void rejectUnknown(Set<String> known) {
        for (String key : values.keySet()) {
            if (!known.contains(key)) {
                throw new InvalidParams("unknown parameter '" + key + "' (expected one of " + new TreeSet<>(known) + ")");
            }
        }
    }

    String string(String key, String fallback) {
        Object v = values.get(key);
        if (v == null) {
            return fallback;
        }
        if (!(v instanceof String s)) {
            throw new InvalidParams(name(key) + " must be a string, got " + describe(v));
        }
        return s;
    }

    String requiredString(String key) {
        String s = string(key, null);
        if (s == null) {
            throw new InvalidParams(name(key) + " is required");
        }
        if (s.isEmpty()) {
            throw new InvalidParams(name(key) + " must not be empty");
        }
        return s;
    }

    long integer(String key, long min, long max, long fallback) {
        Object v = values.get(key);
        if (v == null) {
            return fallback;
        }
        long n;
        if (commandLine && v instanceof String s) {
            try {
                n = Long.parseLong(s.trim());
            } catch (NumberFormatException e) {
                throw new InvalidParams(name(key) + " expects a number, got '" + s + "'");
            }
        } else if (v instanceof Integer || v instanceof Long || v instanceof Short || v instanceof Byte) {
            n = ((Number) v).longValue();
        } else if (v instanceof java.math.BigInteger) {
            throw new InvalidParams(name(key) + " is out of range: " + v);
        } else {
            throw new InvalidParams(name(key) + " must be an integer, got " + describe(v));
        }
        if (n < min || n > max) {
            throw new InvalidParams(name(key) + " must be " + (max == Long.MAX_VALUE ? "at least " + min : min + " to " + max)
                    + ", got " + n);
        }
        return n;
    }

    /** A byte count: a number, or (anywhere) a string with a binary suffix such as 512K or 1G. */
    long size(String key, long min, long fallback) {
        Object v = values.get(key);
        if (v == null) {
            return fallback;
        }
        if (!(v instanceof String s)) {
            return integer(key, min, Long.MAX_VALUE, fallback);
        }
        long bytes;
        try {
            bytes = ByteSizeConverter.parse(s);
        } catch (IllegalArgumentException e) {
            throw new InvalidParams(name(key) + " expects a size such as 4096, 512K or 1G, got '" + s + "'");
        }
        if (bytes < min) {
            throw new InvalidParams(name(key) + " must be at least " + min + ", got '" + s + "'");
        }
        return bytes;
    }

    boolean bool(String key) {
        Object v = values.get(key);
        if (v == null) {
            return false;
        }
        if (!(v instanceof Boolean b)) {
            throw new InvalidParams(name(key) + (commandLine ? " takes no value" : " must be true or false, got " + describe(v)));
        }
        return b;
    }

    /**
     * A list of at most {@code maxItems} strings; on the command line, one comma-separated string.
     * Bounded: every list an export keeps is written to the configuration file, which must stay
     * small enough to load again ({@link DaemonCommand.Config#MAX_BYTES}).
     */
    List<String> strings(String key, int maxItems) {
        Object v = values.get(key);
        if (v == null) {
            return List.of();
        }
        List<String> out = new ArrayList<>();
        if (v instanceof String s && commandLine) {
            for (String part : s.split(",", -1)) {
                out.add(part.trim());
            }
            return checkItems(key, out, maxItems);
        }
        if (v instanceof String single) {
            return List.of(single); // one item needs no brackets
        }
        if (!(v instanceof List<?> list)) {
            throw new InvalidParams(name(key) + " must be a list, got " + describe(v));
        }
        checkItems(key, list, maxItems);
        for (Object item : list) {
            if (!(item instanceof String s)) {
                throw new InvalidParams(name(key) + " must be a list of strings, got an element " + describe(item));
            }
            out.add(s);
        }
        return out;
    }

    /** A list of at most {@code maxItems} integers; on the command line, one comma-separated string. */
    long[] integers(String key, long min, long max, int maxItems) {
        Object v = values.get(key);
        if (v == null) {
            return null;
        }
        List<?> items;
        if (v instanceof String s && commandLine) {
            items = List.of(s.split(",", -1));
        } else if (v instanceof List<?> list) {
            items = list;
        } else if (v instanceof Number) {
            items = List.of(v); // one item needs no brackets
        } else {
            throw new InvalidParams(name(key) + " must be a list of integers, got " + describe(v));
        }
        checkItems(key, items, maxItems);
        long[] out = new long[items.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = new Params(Map.of(key, items.get(i)), commandLine).integer(key, min, max, 0);
        }
        return out;
    }

    private <T extends List<?>> T checkItems(String key, T items, int maxItems) {
        if (items.size() > maxItems) {
            throw new InvalidParams(name(key) + " takes at most " + maxItems + " items, got " + items.size());
        }
        return items;
    }

    /**
     * A string of at most {@code maxChars} characters (or {@code fallback} when absent): every
     * string an export keeps is written to the configuration file, which must load again.
     */
    String string(String key, String fallback, int maxChars) {
        String s = string(key, fallback);
        if (s != null && s.length() > maxChars) {
            throw new InvalidParams(name(key) + " must be at most " + maxChars + " characters, got " + s.length());
        }
        return s;
    }

    /** How much of a string {@link #describe} shows. */
    static final int DESCRIBED_CHARS = 100;

    /** A JSON value as a person would name it in a message. */
    static String describe(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof String s) {
            // A client's string is echoed in an error: only its start, a line may hold 1 MiB.
            return "the string \"" + (s.length() > DESCRIBED_CHARS ? s.substring(0, DESCRIBED_CHARS) + "\"... ("
                    + s.length() + " characters)" : s + "\"");
        }
        if (v instanceof Boolean || v instanceof Number) {
            return (v instanceof Boolean ? "the boolean " : "the number ") + v;
        }
        if (v instanceof List<?>) {
            return "a list";
        }
        if (v instanceof Map<?, ?>) {
            return "an object";
        }
        return v.getClass().getSimpleName().toLowerCase(Locale.ROOT);
    }
}
