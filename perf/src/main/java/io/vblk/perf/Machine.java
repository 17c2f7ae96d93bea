package io.vblk.perf;

import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** Where and when a benchmark ran: for the report header, the JSON and the README. */
final class Machine {
    private Machine() {
    }

    /** One line: host, CPU model and count, memory, kernel, Java. */
    static String describe() {
        String cpu = "?";
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("model name")) {
                    cpu = line.substring(line.indexOf(':') + 1).trim();
                    break;
                }
            }
        } catch (IOException e) {
            // not Linux
        }
        long memGiB = 0;
        try {
            for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (line.startsWith("MemTotal:")) {
                    memGiB = Math.round(Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024.0 / 1024.0);
                }
            }
        } catch (IOException | NumberFormatException e) {
            // unknown
        }
        String host;
        try {
            host = InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            host = "?";
        }
        return String.format(Locale.ROOT, "%s: %d x %s, %d GiB, Linux %s, Java %s", host, Runtime.getRuntime().availableProcessors(),
                cpu, memGiB, System.getProperty("os.version"), System.getProperty("java.version"));
    }

    /** The 1-minute load average, NaN when unknown. */
    static double load() {
        try {
            return Double.parseDouble(Files.readString(Path.of("/proc/loadavg")).split(" ")[0]);
        } catch (IOException | RuntimeException e) {
            return Double.NaN;
        }
    }

    /** Now, ISO-8601 with the zone. */
    static String now() {
        return ZonedDateTime.now().format(DateTimeFormatter.ISO_OFFSET_DATE_TIME);
    }

    /** The report context: date, machine, command, load. */
    static Map<String, Object> context(List<String> args, double loadBefore) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("date", now());
        m.put("machine", describe());
        m.put("command", "vblk bench" + (args.isEmpty() ? "" : " " + String.join(" ", args)));
        m.put("load_before", loadBefore);
        m.put("load_after", load());
        return m;
    }
}
