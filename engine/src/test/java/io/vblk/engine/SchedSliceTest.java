package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.SchedSlice;

/**
 * {@link Tuning#schedSliceNs()}: a device's I/O thread asks the kernel for its scheduler slice
 * when it starts, and the kernel's own view of that thread ({@code /proc/self/task/TID/sched})
 * shows it; without the option the thread keeps the kernel's default. Needs a kernel with EEVDF
 * custom slices (Linux 6.12 or later), skipped elsewhere.
 */
class SchedSliceTest {
    @TempDir
    Path dir;

    @Test
    @DisplayName("with a slice set, the I/O thread runs with it (sched_getattr on the thread, and the kernel's sched file)")
    void theIoThreadRunsWithTheSliceAskedFor() throws Exception {
        assumeTrue(SchedSlice.current() > 0, "no EEVDF custom slices on this kernel");
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).schedSliceNs(300_000).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.THREADS).tuning(tuning).build()) {
            long buf = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true)); // the thread has run its first round
            assertEquals(300_000, rig.device.ioThread(0).schedSliceNs(), "sched_getattr on the I/O thread after asking");
            assertEquals(List.of(300_000L), slicesOf(rig.device.ioThread(0).threadId()), "the scheduler's own view of the thread");
        }
    }

    @Test
    @DisplayName("without the option the I/O thread asks for nothing and keeps the kernel's default slice")
    void withoutTheOptionTheDefaultSliceStays() throws Exception {
        long defaultSlice = SchedSlice.current();
        assumeTrue(defaultSlice > 0, "no EEVDF custom slices on this kernel");
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).schedSliceNs(0).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.THREADS).tuning(tuning).build()) {
            long buf = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            assertEquals(0, rig.device.ioThread(0).schedSliceNs());
            assertEquals(List.of(defaultSlice), slicesOf(rig.device.ioThread(0).threadId()));
        }
    }

    @Test
    @DisplayName("a slice outside 0.1-100 ms (other than 0) is refused when the tuning is built")
    void outOfRangeSlicesAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> Tuning.builder().schedSliceNs(50_000));
        assertThrows(IllegalArgumentException.class, () -> Tuning.builder().schedSliceNs(200_000_000));
    }

    /** The se.slice of thread {@code tid} of this process, as the kernel reports it. */
    private static List<Long> slicesOf(long tid) throws IOException {
        List<Long> slices = new ArrayList<>();
        try (Stream<String> lines = Files.lines(Path.of("/proc/self/task/" + tid + "/sched"))) {
            lines.filter(l -> l.startsWith("se.slice")).forEach(l -> slices.add(Long.parseLong(l.substring(l.indexOf(':') + 1).trim())));
        }
        return slices;
    }
}
