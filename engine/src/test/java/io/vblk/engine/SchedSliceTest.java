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

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.SchedSlice;

/**
 * {@link Tuning#schedSliceNs()} on real threads: a device's I/O thread (and a shared one) runs
 * with the slice only while its scheduler statistics say it loses time waiting for a CPU and
 * does not poll ({@link SliceGovernor}), and the kernel's own view of that thread ({@code
 * sched_getattr}, {@code /proc/self/task/TID/sched}) shows each change. The statistics are a
 * fake following the wall clock ({@link IdleStrategies#schedstats}), so that the test decides
 * what the thread sees without loading the machine. Needs a kernel with EEVDF custom slices
 * (Linux 6.12 or later), skipped elsewhere.
 */
class SchedSliceTest {
    @TempDir
    Path dir;

    /** Run and delay shares of wall time, as a thread would see them in its schedstat. */
    static final class FakeSchedstat implements SliceGovernor.Schedstat {
        volatile double run = 0.2;
        volatile double delay;
        private long lastNs = System.nanoTime();
        private long runNs;
        private long delayNs;

        @Override
        public synchronized boolean read() {
            long now = System.nanoTime();
            runNs += (long) (run * (now - lastNs));
            delayNs += (long) (delay * (now - lastNs));
            lastNs = now;
            return true;
        }

        @Override
        public synchronized long runNs() {
            return runNs;
        }

        @Override
        public synchronized long delayNs() {
            return delayNs;
        }
    }

    private final FakeSchedstat stat = new FakeSchedstat();

    @BeforeEach
    void fakeStatistics() {
        IdleStrategies.schedstats = () -> stat;
    }

    @AfterEach
    void realStatistics() {
        IdleStrategies.schedstats = ThreadRunDelay::new;
    }

    /** Round trips until the I/O thread reports {@code sliceNs} (at most 20 s); returns what it reports. */
    private static long roundTripsUntil(DeviceRig rig, long sliceNs) throws Exception {
        long buf = rig.buffer(0, 4096);
        long deadline = System.nanoTime() + 20_000_000_000L;
        do {
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true)); // each wait's start is a look
            Thread.sleep(2);
        } while (rig.device.ioThread(0).schedSliceNs() != sliceNs && System.nanoTime() < deadline);
        return rig.device.ioThread(0).schedSliceNs();
    }

    @Test
    @DisplayName("with a slice set, the I/O thread takes it while it waits for a CPU, and gives it back when it polls")
    void theIoThreadTakesTheSliceOnlyWhileContended() throws Exception {
        long defaultSlice = SchedSlice.current();
        assumeTrue(defaultSlice > 0, "no EEVDF custom slices on this kernel");
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).schedSliceNs(300_000).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.THREADS).tuning(tuning).build()) {
            long buf = rig.buffer(0, 4096);
            for (int i = 0; i < 20; i++) {
                assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
                Thread.sleep(2);
            }
            long tid = rig.device.ioThread(0).threadId();
            assertEquals(0, rig.device.ioThread(0).schedSliceNs(), "uncontended: nothing asked");
            assertEquals(List.of(defaultSlice), slicesOf(tid), "the kernel's default slice");

            stat.delay = 0.3;
            assertEquals(300_000, roundTripsUntil(rig, 300_000), "sched_getattr on the I/O thread once it waits for a CPU");
            assertEquals(List.of(300_000L), slicesOf(tid), "the scheduler's own view of the thread");

            stat.run = 0.9; // it polls: a short slice would cut each poll
            assertEquals(0, roundTripsUntil(rig, 0));
            assertEquals(List.of(defaultSlice), slicesOf(tid), "the default slice again");
        }
    }

    @Test
    @DisplayName("a shared I/O thread with a slice does the same for all its devices")
    void aSharedThreadTakesTheSliceWhileContended() throws Exception {
        long defaultSlice = SchedSlice.current();
        assumeTrue(defaultSlice > 0, "no EEVDF custom slices on this kernel");
        stat.delay = 0.3;
        try (SharedIoThread shared = new SharedIoThread("shared-slice", WaitStrategy.BLOCKING, 0, null, 200_000)) {
            assertEquals(200_000, shared.schedSliceNs());
            try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.NULL).tuning(Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build())
                    .ioThreads(shared).build()) {
                long buf = rig.buffer(0, 4096);
                long deadline = System.nanoTime() + 20_000_000_000L;
                while (shared.reportedSliceNs() != 200_000 && System.nanoTime() < deadline) {
                    assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
                    Thread.sleep(2);
                }
                assertEquals(200_000, shared.reportedSliceNs());
                assertEquals(List.of(200_000L), slicesOf(shared.threadId()), "the shared thread's own slice");
            }
        }
    }

    @Test
    @DisplayName("without the option the I/O thread asks for nothing, even while it waits for a CPU")
    void withoutTheOptionTheDefaultSliceStays() throws Exception {
        long defaultSlice = SchedSlice.current();
        assumeTrue(defaultSlice > 0, "no EEVDF custom slices on this kernel");
        stat.delay = 0.3;
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).schedSliceNs(0).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.THREADS).tuning(tuning).build()) {
            long buf = rig.buffer(0, 4096);
            for (int i = 0; i < 30; i++) {
                assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
                Thread.sleep(2);
            }
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
