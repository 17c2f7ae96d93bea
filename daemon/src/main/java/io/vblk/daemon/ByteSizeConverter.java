package io.vblk.daemon;

import java.util.Locale;

import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/**
 * Byte counts as people write them on command lines: {@code 4096}, {@code 512K}, {@code 1g},
 * {@code 4KiB}; suffixes K, M, G, T are powers of 1024, case-insensitive, optionally followed by
 * B or iB. One parser for every vblk command: picocli options declare it as their converter
 * ({@code vblk bench --size}, {@code --bs}), and the daemon's parameters ({@link Params#size})
 * call {@link #parse} for JSON strings and command-line values alike.
 */
public final class ByteSizeConverter implements ITypeConverter<Long> {
    /**
     * Converts an option's value; picocli reports a failure as "Invalid value for option
     * '--NAME': MESSAGE" on one line.
     *
     * @throws TypeConversionException naming {@code value} when it is not a size or overflows
     */
    @Override
    public Long convert(String value) {
        try {
            return parse(value);
        } catch (IllegalArgumentException e) {
            throw new TypeConversionException(e.getMessage());
        }
    }

    /**
     * Parses {@code text} into bytes.
     *
     * @throws IllegalArgumentException naming {@code text} when it is not a size or overflows
     */
    public static long parse(String text) {
        String v = text.trim().toLowerCase(Locale.ROOT);
        if (v.endsWith("ib")) {
            v = v.substring(0, v.length() - 2);
        } else if (v.endsWith("b")) {
            v = v.substring(0, v.length() - 1);
        }
        int shift = 0;
        if (!v.isEmpty()) {
            switch (v.charAt(v.length() - 1)) {
                case 'k' -> shift = 10;
                case 'm' -> shift = 20;
                case 'g' -> shift = 30;
                case 't' -> shift = 40;
                default -> shift = 0;
            }
        }
        String digits = shift == 0 ? v : v.substring(0, v.length() - 1);
        long n;
        try {
            n = Long.parseLong(digits);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("not a size such as 4096, 512K or 1G: '" + text + "'", e);
        }
        if (n < 0 || (shift > 0 && n > (Long.MAX_VALUE >> shift))) {
            throw new IllegalArgumentException("size out of range: '" + text + "'");
        }
        return n << shift;
    }
}
