package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_DISCARD;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.testkit.GatedBackend;

/**
 * rev14b M2: every pop waits for as many free back-end slots as a DISCARD or WRITE_ZEROES
 * request may take at once (one per range segment), reads included. A device whose
 * maxRangeSegments exceeded its back end's depth therefore never popped anything, and its thread
 * spun in the sleep re-check, which saw the chains and vetoed every sleep. Such a depth is now
 * refused at build time (an explicit one), or raised to the segments (the default one). And the
 * sleep re-check asks the pop's own condition: chains that wait for back-end slots (fewer free
 * than the reserve, requests to spare) no longer keep the thread from sleeping until a
 * completion arrives.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class RangeReserveDepthTest {
    @TempDir
    Path dir;

    @Test
    void anExplicitDepthBelowTheRangeSegmentsIsRefusedAtBuild() {
        Tuning t = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).backendDepth(4).build();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DeviceRig.builder(dir, BackendKind.NULL).tuning(t).config(b -> b.discard(true).maxRangeSegments(8)).build().close());
        assertTrue(e.getMessage().contains("maxRangeSegments"), e.getMessage());
    }

    /** A 4-entry queue gives a default depth of 4; with 8 range segments it is raised to 8, and reads and an 8-range DISCARD are served. */
    @Test
    void theDefaultDepthCoversTheRangeSegments() throws Exception {
        Tuning t = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build();
        try (DeviceRig a = DeviceRig.builder(dir, BackendKind.NULL).tuning(t)
                .config(b -> b.queueSize(4).discard(true).maxRangeSegments(8)).build()) {
            long buf = a.buffer(0, 4096);
            assertEquals(0, a.roundTrip(0, T_IN, 0, buf, 4096, true)); // timed out (never popped) before
            long segments = a.buffer(0, 8 * 16);
            long host = a.host(segments, 8 * 16);
            for (int i = 0; i < 8; i++) {
                UnsafeApi.putLong(host + 16L * i, 64L * i); // sector
                UnsafeApi.putInt(host + 16L * i + 8, 8); // sectors
                UnsafeApi.putInt(host + 16L * i + 12, 0); // flags
            }
            assertEquals(0, a.roundTrip(0, T_DISCARD, 0, segments, 8 * 16, false));
        }
    }

    /**
     * 17 reads in flight at a held back end of depth 24 leave 7 slots, fewer than the 8 a range
     * request may need: the 3 reads still posted wait for a completion, which wakes the thread,
     * so it sleeps (it vetoed the sleep before: a busy loop for as long as the disk took).
     */
    @Test
    void chainsWaitingForBackEndSlotsLetTheThreadSleep() {
        GatedBackend gate = new GatedBackend(IoBackends.open(BackendKind.NULL, null, 24), false);
        Tuning inline = Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
        try (RoundRig rig = new RoundRig(inline, null, false, 1, gate, c -> c.discard(true).maxRangeSegments(8), 0)) {
            rig.offerReads(20);
            assertEquals(17, rig.thread.doWork(), "popped while 8 slots were free");
            assertEquals(-1, rig.thread.prepareSleep(), "the 3 left wait for a completion: sleep on it");
            rig.thread.finishSleep();
            gate.open();
            rig.thread.doWork(); // reaps the 17
            rig.thread.doWork(); // pops the 3 (in the same round when reaped first)
            gate.open();
            rig.thread.doWork();
            assertEquals(20, rig.reapAll(), "every read served");
        }
    }
}
