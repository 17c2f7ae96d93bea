package io.vblk.perf.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

/** {@code bench --json} and fio's output go through jackson-jr: what is written reads back, and bad JSON is refused. */
class JsonTest {
    @Test
    void aReportRoundTripsWithNonFiniteNumbersAsNull() {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("name", "serve \"null\"\n");
        root.put("iops", 123456.0);
        root.put("p50_us", 3.14159265);
        root.put("cpu_us_per_io", Double.NaN);
        root.put("results", List.of(Map.of("ok", true)));
        Object back = Json.parse(Json.render(root));
        assertEquals("serve \"null\"\n", Json.path(back, "name"));
        assertEquals(123456.0, Json.number(back, "iops"));
        assertEquals(3.1416, Json.number(back, "p50_us"), 1e-9);
        assertNull(Json.path(back, "cpu_us_per_io"));
        assertTrue(Json.path(back, "results") instanceof List<?>);
    }

    @Test
    void fioShapedOutputIsReadByPath() {
        Object fio = Json.parse("{\"jobs\":[{\"read\":{\"total_ios\":1000,\"runtime\":2000,"
                + "\"lat_ns\":{\"percentile\":{\"50.000000\":12288,\"99.000000\":40960},\"max\":90000}},\"usr_cpu\":1.5}]}");
        Object job = ((List<?>) Json.path(fio, "jobs")).get(0);
        assertEquals(1000, Json.number(job, "read", "total_ios"));
        assertEquals(12288, ((Number) ((Map<?, ?>) Json.path(job, "read", "lat_ns", "percentile")).get("50.000000")).longValue());
        assertEquals(Double.NaN, Json.number(job, "write", "total_ios"));
        assertThrows(IllegalArgumentException.class, () -> Json.parse("{\"jobs\": [}"));
    }
}
