package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import io.vblk.block.NetworkTimeouts;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.Tuple;

/**
 * {@link ExportSpec#toConfig()}, what config.save and --persist write for an export: for random
 * export.add parameters over every parameter and image kind, the saved parameters, written as the
 * file holds them and parsed again, make an export equal field by field (every field of
 * ExportSpec, so a field added later and not saved fails here), and save to the same text again.
 */
class SavedExportPropertyTest {
    /** Fields that are how the export was written, not what it is: an image "null:1M" is saved as "null:1048576". */
    private static final Set<String> SPELLING = Set.of("imageArg");

    @Property(tries = 400)
    void savedParametersMakeTheSameExport(@ForAll("exportParams") Map<String, Object> given) throws IOException {
        ExportSpec first = ExportSpec.parse(Params.json(given), null);
        Map<String, Object> saved = first.toConfig();
        assertTrue(saved.keySet().containsAll(given.keySet()), "every parameter given is saved: given " + given.keySet()
                + ", saved " + saved.keySet());
        ExportSpec second = ExportSpec.parse(Params.json(throughFile(saved)), null);
        assertEquals(fields(first), fields(second), "given " + given);
        assertEquals(new String(ConfigFile.render(saved), StandardCharsets.UTF_8),
                new String(ConfigFile.render(second.toConfig()), StandardCharsets.UTF_8));
    }

    /** The generator reaches every export.add parameter: one added to ExportSpec.KEYS must be generated (and so saved). */
    @Example
    void theGeneratorCoversEveryParameter() {
        Set<String> seen = new TreeSet<>();
        exportParams().sampleStream().limit(3000).forEach(m -> seen.addAll(m.keySet()));
        assertEquals(new TreeSet<>(ExportSpec.KEYS), seen);
    }

    /** Relative paths are saved absolute: a restarted daemon's working directory may be another. */
    @Example
    void relativePathsAreSavedAbsolute() {
        ExportSpec s = ExportSpec.parse(Params.json(Map.of("id", "d", "image", "disk.img", "socket", "d.sock")), null);
        Map<String, Object> saved = s.toConfig();
        assertEquals(Path.of("disk.img").toAbsolutePath().toString(), saved.get("image"));
        assertEquals(Path.of("d.sock").toAbsolutePath().toString(), saved.get("socket"));
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> throughFile(Map<String, Object> saved) throws IOException {
        String text = new String(ConfigFile.render(ConfigFile.document(List.of(), List.of(saved))), StandardCharsets.UTF_8);
        Map<String, Object> doc = (Map<String, Object>) JsonRpc.JSON_IN.anyFrom(text);
        return ((List<Map<String, Object>>) doc.get("exports")).get(0);
    }

    /** Every instance field of {@code s}, by name, as text (arrays by content). */
    private static Map<String, String> fields(ExportSpec s) {
        Map<String, String> m = new TreeMap<>();
        for (Field f : ExportSpec.class.getDeclaredFields()) {
            if (Modifier.isStatic(f.getModifiers()) || SPELLING.contains(f.getName())) {
                continue;
            }
            try {
                f.setAccessible(true);
                m.put(f.getName(), Arrays.deepToString(new Object[] {f.get(s)}));
            } catch (IllegalAccessException e) {
                throw new AssertionError(e);
            }
        }
        return m;
    }

    // ------------------------------------------------------------ generators

    @Provide
    Arbitrary<Map<String, Object>> exportParams() {
        Arbitrary<String> kind = Arbitraries.of("file", "null", "nbd", "nbds", "rbd");
        return Combinators.combine(kind, Arbitraries.of(false, true)).as(Tuple::of)
                .flatMap(t -> params(t.get1(), t.get2() && !t.get1().equals("null")));
    }

    private static Arbitrary<Map<String, Object>> params(String kind, boolean qcow2) {
        List<Arbitrary<Map<String, Object>>> keys = new ArrayList<>();
        keys.add(Arbitraries.strings().withChars("abcxyz019._-").ofMinLength(1).ofMaxLength(64).map(id -> Map.of("id", id)));
        keys.add(image(kind).map(i -> Map.of("image", i)));
        keys.add(Arbitraries.strings().alpha().ofMinLength(1).ofMaxLength(12).map(n -> Map.of("socket", "/run/vblk/" + n + ".sock")));
        if (qcow2) {
            keys.add(Arbitraries.just(Map.of("format", "qcow2")));
            keys.add(opt("l2_cache_tables", Arbitraries.integers().between(2, 65536)));
            keys.add(opt("network_backing", Arbitraries.of(false, true)));
            keys.add(opt("backing_dir", Arbitraries.of("/", "/tmp")));
        } else {
            keys.add(opt("format", Arbitraries.just("raw")));
        }
        keys.add(opt("queues", Arbitraries.integers().between(1, 64)));
        keys.add(opt("queue_size", Arbitraries.integers().between(0, 10).map(i -> 1 << i)));
        keys.add(opt("read_only", Arbitraries.of(false, true)));
        keys.add(opt("serial", Arbitraries.strings().withCharRange(' ', '~').ofMaxLength(20)));
        keys.add(opt("cache", Arbitraries.of("none", "writeback")));
        if (kind.equals("file")) {
            keys.add(opt("aio", Arbitraries.of("io_uring", "linux-aio", "threads", "null")));
        } else if (kind.equals("null")) {
            keys.add(opt("aio", Arbitraries.just("null")));
        }
        keys.add(opt("wait", Arbitraries.of("adaptive", "blocking", "sleeping", "yielding", "busy-spin")));
        keys.add(opt("poll_max_us", Arbitraries.longs().between(0, 1_000_000)));
        keys.add(opt("sched_slice_us", Arbitraries.oneOf(Arbitraries.just(0L), Arbitraries.longs().between(100, 100_000))));
        keys.add(opt("fixed_buffers", Arbitraries.of("auto", "on", "off")));
        keys.add(opt("locking", Arbitraries.of("on", "off", "auto")));
        keys.add(opt("incoming", Arbitraries.of(false, true)));
        keys.add(opt("iothreads", Arbitraries.of("t0", "t1", "t2").list().ofMaxSize(3)));
        keys.add(opt("backend_depth", Arbitraries.integers().between(1, 4096)));
        keys.add(opt("iops_limit", Arbitraries.longs().between(0, 10_000_000_000L)));
        keys.add(opt("bps_limit", Arbitraries.oneOf(Arbitraries.longs().between(0, 1L << 40).map(v -> (Object) v),
                Arbitraries.integers().between(1, 999).map(v -> (Object) (v + "M")))));
        keys.add(opt("bounce_budget", Arbitraries.oneOf(Arbitraries.longs().between(4L << 20, 1L << 32).map(v -> (Object) v),
                Arbitraries.of("64M", "1G"))));
        keys.add(opt("max_guest_memory", Arbitraries.oneOf(Arbitraries.longs().between(1L << 20, 1L << 44).map(v -> (Object) v),
                Arbitraries.of("1M", "64G", "1T", "16T"))));
        keys.add(opt("socket_mode", Arbitraries.oneOf(Arbitraries.of("0600", "660", "0666", "0700", "0777").map(v -> (Object) v),
                Arbitraries.of(0600, 0660, 0777).map(v -> (Object) v))));
        keys.add(opt("socket_group", Arbitraries.strings().alpha().numeric().ofMinLength(1).ofMaxLength(8)));
        keys.add(opt("allow_uids", Arbitraries.longs().between(0, 0xFFFF_FFFEL).list().ofMinSize(1).ofMaxSize(3)));
        if (kind.equals("nbds")) {
            keys.add(opt("tls_certificates", Arbitraries.of("/etc/pki/vblk", "/run/certs")));
            keys.add(opt("tls_hostname", Arbitraries.strings().alpha().ofMinLength(1).ofMaxLength(10)));
        }
        if (kind.startsWith("nbd")) {
            keys.add(opt("nbd_connections", Arbitraries.integers().between(1, 16)));
            keys.add(opt("nbd_strict_flush", Arbitraries.of(true, false)));
        }
        keys.add(opt("connect_timeout_ms", Arbitraries.integers().between(1, NetworkTimeouts.MAX_MS)));
        keys.add(opt("request_timeout_ms", Arbitraries.integers().between(1, NetworkTimeouts.MAX_MS)));
        keys.add(opt("retry_timeout_ms", Arbitraries.integers().between(0, NetworkTimeouts.MAX_MS)));
        return Combinators.combine(keys).as(parts -> {
            Map<String, Object> m = new LinkedHashMap<>();
            for (Map<String, Object> part : parts) {
                if (part != null) {
                    m.putAll(part);
                }
            }
            // The timeouts apply to what waits for a server: an NBD image (all three), any network
            // image (the retry time), a qcow2 image following a network backing (all three).
            boolean backing = qcow2 && Boolean.TRUE.equals(m.get("network_backing"));
            if (!kind.startsWith("nbd") && !backing) {
                m.remove("connect_timeout_ms");
                m.remove("request_timeout_ms");
            }
            if (kind.equals("file") && !backing || kind.equals("null")) {
                m.remove("retry_timeout_ms");
            }
            return m;
        });
    }

    private static Arbitrary<String> image(String kind) {
        Arbitrary<String> name = Arbitraries.strings().alpha().numeric().ofMinLength(1).ofMaxLength(10);
        return switch (kind) {
            case "file" -> name.map(n -> "/var/lib/vblk/" + n + ".img");
            case "null" -> Arbitraries.oneOf(Arbitraries.longs().between(1, 1L << 31).map(n -> "null:" + n * 512),
                    Arbitraries.integers().between(1, 4096).flatMap(n -> Arbitraries.of("K", "M", "G").map(u -> "null:" + n + u)));
            case "nbd" -> Arbitraries.oneOf(name.map(n -> "nbd://storage:10809/" + n),
                    name.map(n -> "nbd+unix:///" + n + "?socket=/run/nbd.sock"));
            case "nbds" -> name.map(n -> "nbds://storage/" + n);
            default -> name.map(n -> "rbd:pool/" + n);
        };
    }

    /** {@code key} with one of {@code values}, or (as often as not) absent: null. */
    private static Arbitrary<Map<String, Object>> opt(String key, Arbitrary<?> values) {
        return values.map(v -> Map.<String, Object>of(key, v)).injectNull(0.5);
    }
}
