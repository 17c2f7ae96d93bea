package io.vblk.perf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.Latency;

/** The medians a contention cell prints over each contender's repeats. */
class ContentionGroupTest {
    private static BenchResult run(long requests, double waitUsPerIo) {
        return new BenchResult("r", "vhost-user", "vblk", "null", "-", "-", "null", Workload.randomReads(1, 0, 1_000_000_000L),
                requests, requests * 4096, 1.0, 0, Latency.ofPoints(Map.of(), 0), Double.NaN, "n/a", Double.NaN,
                Map.of("backend_wait_us_per_io", waitUsPerIo));
    }

    @Test
    void oddCountTakesTheMiddleEvenCountTheMeanOfTheMiddleTwo() {
        List<BenchResult> odd = List.of(run(300, 9), run(100, 1), run(200, 4));
        assertEquals(200, ContentionGroup.median(odd, BenchResult::iops), 1e-9);
        assertEquals(4, ContentionGroup.median(odd, r -> r.perIo().get("backend_wait_us_per_io")), 1e-9);
        List<BenchResult> even = List.of(run(400, 1), run(100, 1), run(300, 1), run(200, 1));
        assertEquals(250, ContentionGroup.median(even, BenchResult::iops), 1e-9);
        assertTrue(Double.isNaN(ContentionGroup.median(List.of(), BenchResult::iops)));
    }
}
