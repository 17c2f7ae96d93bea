package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.testkit.ForwardingBackend;

/**
 * Every disk of a JVM shares its direct-memory pool (-XX:MaxDirectMemorySize). A back end that
 * cannot get a direct buffer on the I/O thread throws the JVM's OutOfMemoryError ("Cannot
 * reserve N bytes of direct buffer memory", java.nio.Bits), which used to quarantine every queue
 * of the disk as an internal error: a healthy disk needed a reset because another disk held the
 * pool. Now such a failure quarantines nothing, is reported once, and the disk keeps serving.
 * The back end here throws that error (the JDK's own message) from its submit, the first time
 * it is armed, before anything is handed on: the requests stay prepared and go with the next
 * round's submit.
 */
class DirectMemoryShortageTest {
    @TempDir
    Path dir;

    /** Throws the JDK's direct-memory OutOfMemoryError from submit while {@link #failures} is positive. */
    static final class Starved extends ForwardingBackend {
        final AtomicInteger failures = new AtomicInteger();

        Starved(IoBackend real) {
            super(real);
        }

        @Override
        public int submit() {
            if (failures.getAndUpdate(n -> Math.max(0, n - 1)) > 0) {
                throw new OutOfMemoryError("Cannot reserve 8256 bytes of direct buffer memory (allocated: 16777216,"
                        + " limit: 16777216)");
            }
            return super.submit();
        }

        final AtomicInteger readFailures = new AtomicInteger();

        @Override
        public int prepareRead(long offset, IoVector buffers, long userData) {
            if (readFailures.getAndUpdate(n -> Math.max(0, n - 1)) > 0) {
                throw new OutOfMemoryError("Cannot reserve 8256 bytes of direct buffer memory (allocated: 16777216,"
                        + " limit: 16777216)");
            }
            return super.prepareRead(offset, buffers, userData);
        }
    }

    @ParameterizedTest
    @EnumSource(ThreadingMode.class)
    void aDirectMemoryShortageOnTheIoThreadQuarantinesNothingAndTheDiskServesOn(ThreadingMode mode) throws Exception {
        Starved[] backend = new Starved[1];
        List<String> reports = new CopyOnWriteArrayList<>();
        DeviceListener listener = new DeviceListener() {
            @Override
            public void faultAttributed(String report) {
                reports.add(report);
            }
        };
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(tuning).listener(listener)
                .backends(f -> depth -> backend[0] = new Starved(f.open(depth))).build()) {
            long buf = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, 8, buf, 4096, false));
            backend[0].failures.set(3); // three rounds' submits fail, as while another disk holds the pool
            for (int i = 0; i < 4; i++) {
                assertEquals(S_OK, rig.roundTrip(0, T_IN, 8, buf, 4096, true), "request " + i + "; reports " + reports);
            }
            assertEquals(0, backend[0].failures.get(), "every armed failure was thrown");
            assertFalse(rig.device.isBroken(0), "quarantined: " + rig.device.brokenReason(0));
            assertEquals(0L, rig.device.counters(0).get(QueueCounters.QUARANTINES));
            assertEquals(1, reports.size(), "reported once: " + reports);
            assertTrue(reports.get(0).contains("direct buffer memory"), reports.get(0));
        }
    }

    /**
     * The shortage inside a back end's prepare (the pop loop's hand-over): whether the back end
     * took the request cannot be known, so it stays counted in flight (never given back while it
     * may complete), the queue is not quarantined and serves the next requests, and a stop still
     * returns: the thread's suspect state lets the drain give the request up.
     */
    @ParameterizedTest
    @EnumSource(ThreadingMode.class)
    void aShortageInAPrepareQuarantinesNothingAndTheDrainStillEnds(ThreadingMode mode) throws Exception {
        Starved[] backend = new Starved[1];
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).build();
        DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(tuning)
                .backends(f -> depth -> backend[0] = new Starved(f.open(depth))).build();
        try {
            long buf = rig.buffer(0, 4096);
            long other = rig.buffer(0, 4096);
            backend[0].readFailures.set(1);
            rig.add(0, T_IN, 0, buf, 4096, true); // its prepare throws: never answered
            rig.kick(0);
            QuarantineDrainTest.awaitCounter(rig, QueueCounters.REQUESTS, 1);
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, 16, other, 4096, false));
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 16, other, 4096, true));
            assertFalse(rig.device.isBroken(0), "quarantined: " + rig.device.brokenReason(0));
        } finally {
            CompletableFuture<Void> close = CompletableFuture.runAsync(rig::close);
            close.get(60, TimeUnit.SECONDS); // a drain that waited for the lost request would never end
        }
    }
}
