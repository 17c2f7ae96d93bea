package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.stream.Stream;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import io.vblk.aio.BackendKind;

/**
 * Four queues mapped onto two I/O threads, under every wait strategy and both threading modes:
 * each queue writes its own blocks and reads back the others', concurrently.
 */
class MultiQueueTest {
    @TempDir
    Path dir;

    static Stream<Arguments> settings() {
        Stream.Builder<Arguments> b = Stream.builder();
        for (WaitStrategy w : WaitStrategy.values()) {
            for (ThreadingMode m : ThreadingMode.values()) {
                b.add(Arguments.of(w, m, m == ThreadingMode.SHARED ? BackendKind.IO_URING : BackendKind.THREADS));
            }
        }
        b.add(Arguments.of(WaitStrategy.ADAPTIVE, ThreadingMode.SHARED, BackendKind.LINUX_AIO));
        return b.build();
    }

    @ParameterizedTest
    @MethodSource("settings")
    void queuesOnTwoThreadsServeConcurrently(WaitStrategy wait, ThreadingMode mode, BackendKind kind) throws Exception {
        Tuning tuning = Tuning.builder().waitStrategy(wait).threadingMode(mode).queueThreads(0, 1, 0, 1).pollNs(20_000).build();
        try (DeviceRig rig = DeviceRig.builder(dir, kind).config(b -> b.numQueues(4)).tuning(tuning).build()) {
            Thread[] guests = new Thread[4];
            Throwable[] failures = new Throwable[4];
            for (int q = 0; q < 4; q++) {
                int queue = q;
                guests[q] = new Thread(() -> {
                    try {
                        exercise(rig, queue);
                    } catch (Throwable t) {
                        failures[queue] = t;
                    }
                });
                guests[q].start();
            }
            for (int q = 0; q < 4; q++) {
                guests[q].join(60_000);
                if (failures[q] != null) {
                    throw new AssertionError("queue " + q + " failed", failures[q]);
                }
                assertEquals(200, rig.device.counters(q).get(QueueCounters.COMPLETIONS));
            }
        }
    }

    /** 100 writes of queue-tagged blocks, then 100 reads checking the tags. */
    private static void exercise(DeviceRig rig, int q) {
        long buf = rig.buffer(q, 4096);
        long h = rig.host(buf, 4096);
        for (int i = 0; i < 100; i++) {
            UnsafeApi.setMemory(h, 4096, (byte) (q * 100 + i % 50));
            assertEquals(S_OK, rig.roundTrip(q, T_OUT, (q * 100L + i) * 8, buf, 4096, false));
        }
        for (int i = 0; i < 100; i++) {
            UnsafeApi.setMemory(h, 4096, (byte) 0);
            assertEquals(S_OK, rig.roundTrip(q, T_IN, (q * 100L + i) * 8, buf, 4096, true));
            if (rig.kind != BackendKind.NULL) {
                assertEquals((byte) (q * 100 + i % 50), UnsafeApi.getByte(h + 4095));
            }
        }
    }
}
