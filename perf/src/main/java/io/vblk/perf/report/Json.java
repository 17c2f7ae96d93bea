package io.vblk.perf.report;

import java.io.IOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.jr.ob.JSON;

/**
 * The benchmark's JSON, through jackson-jr: rendering values (maps, lists, strings, numbers,
 * booleans, null) for {@code --json}, and parsing fio's {@code --output-format=json} into maps
 * and lists. Doubles render with at most four decimals (whole ones as integers) and non-finite
 * ones as null, so a report stays valid JSON and diffs stay readable.
 */
public final class Json {
    private static final JSON PRETTY = JSON.std.with(JSON.Feature.PRETTY_PRINT_OUTPUT).with(JSON.Feature.WRITE_NULL_PROPERTIES);
    private static final JSON READER = JSON.std.with(JSON.Feature.USE_BIG_DECIMAL_FOR_FLOATS);

    private Json() {
    }

    /** Renders {@code value}, indented, with a final newline. */
    public static String render(Object value) {
        try {
            return PRETTY.asString(normalize(value)) + "\n";
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot render JSON: " + e.getMessage(), e);
        }
    }

    /** Numbers as the report wants them; anything that is not JSON already becomes its string. */
    private static Object normalize(Object value) {
        if (value == null || value instanceof String || value instanceof Boolean) {
            return value;
        }
        if (value instanceof Double || value instanceof Float) {
            double d = ((Number) value).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                return null;
            }
            if (d == Math.rint(d) && Math.abs(d) < 1e15) {
                return (long) d;
            }
            return BigDecimal.valueOf(d).setScale(4, RoundingMode.HALF_EVEN);
        }
        if (value instanceof Number) {
            return ((Number) value).longValue();
        }
        if (value instanceof Map<?, ?> map) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : map.entrySet()) {
                out.put(String.valueOf(e.getKey()), normalize(e.getValue()));
            }
            return out;
        }
        if (value instanceof List<?> list) {
            List<Object> out = new ArrayList<>(list.size());
            for (Object o : list) {
                out.add(normalize(o));
            }
            return out;
        }
        return value.toString();
    }

    /**
     * Parses {@code text}: objects as maps, arrays as lists, numbers as Integer, Long, BigInteger
     * or BigDecimal.
     *
     * @throws IllegalArgumentException when it is not JSON
     */
    public static Object parse(String text) {
        try {
            return READER.anyFrom(text);
        } catch (IOException e) {
            throw new IllegalArgumentException("bad JSON: " + e.getMessage(), e);
        }
    }

    /** {@code root.a.b.c} of nested maps, or null where a key is missing. */
    public static Object path(Object root, String... keys) {
        Object cur = root;
        for (String k : keys) {
            if (!(cur instanceof Map)) {
                return null;
            }
            cur = ((Map<?, ?>) cur).get(k);
        }
        return cur;
    }

    /** {@link #path} as a double, NaN when missing. */
    public static double number(Object root, String... keys) {
        Object v = path(root, keys);
        return v instanceof Number ? ((Number) v).doubleValue() : Double.NaN;
    }
}
