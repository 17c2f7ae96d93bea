package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.testkit.ForwardingBackend;

/**
 * rev13a: a driver that does not negotiate VIRTIO_BLK_F_FLUSH (and no CONFIG_WCE is offered)
 * gets a write-through device (virtio 1.2 5.2.5): a write's status says OK only once the write
 * is durable. On every file back end, a recording back end checks that each write's status
 * turned OK only after a flush prepared after the write finished had completed, and that the
 * flushes come per reaped batch, not per write. A read-only device issues no flush.
 */
class WriteThroughWithoutFlushTest {
    private static final int WRITES = 16;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void writesCompleteOnlyOnceAFlushCoversThem(BackendKind kind) throws Exception {
        Recorder[] recorder = new Recorder[1];
        try (DeviceRig rig = DeviceRig.builder(dir, kind).withhold(BlkFeatures.FLUSH)
                .tuning(Tuning.builder().threadingMode(ThreadingMode.SHARED).waitStrategy(WaitStrategy.BLOCKING).build())
                .backends(f -> depth -> recorder[0] = new Recorder(f.open(depth))).build()) {
            long data = rig.buffer(0, 4096L * WRITES);
            int[] heads = new int[WRITES];
            for (int i = 0; i < WRITES; i++) {
                heads[i] = rig.add(0, BlkRequestDescriptor.T_OUT, 8L * i, data + 4096L * i, 4096, false);
            }
            Recorder r = recorder[0];
            r.watch(rig, heads);
            rig.kick(0);
            for (int i = 0; i < WRITES; i++) {
                rig.awaitUsed(0, 10_000);
            }
            for (int i = 0; i < WRITES; i++) {
                assertEquals(BlkRequestDescriptor.S_OK, rig.status(0, heads[i]), "write " + i);
            }
            synchronized (r) {
                assertEquals(List.of(), r.violations, "a write's status said OK before a flush covering it completed");
                assertTrue(r.flushes >= 1, "no flush: the writes were never made durable");
                assertTrue(r.flushes <= r.pollsWithWrites, r.flushes + " flushes for " + r.pollsWithWrites
                        + " reaped batches of writes: one per batch, not per write");
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void aReadOnlyDeviceIssuesNoFlush(BackendKind kind) throws Exception {
        Recorder[] recorder = new Recorder[1];
        try (DeviceRig rig = DeviceRig.builder(dir, kind).withhold(BlkFeatures.FLUSH).readOnly(true)
                .tuning(Tuning.builder().threadingMode(ThreadingMode.SHARED).waitStrategy(WaitStrategy.BLOCKING).build())
                .backends(f -> depth -> recorder[0] = new Recorder(f.open(depth))).build()) {
            long data = rig.buffer(0, 8192);
            assertEquals(BlkRequestDescriptor.S_OK, rig.roundTrip(0, BlkRequestDescriptor.T_IN, 0, data, 4096, true));
            assertEquals(BlkRequestDescriptor.S_IOERR, rig.roundTrip(0, BlkRequestDescriptor.T_OUT, 0, data + 4096, 4096, false));
            synchronized (recorder[0]) {
                assertEquals(0, recorder[0].flushes, "a read-only device has nothing to make durable");
                assertEquals(0, recorder[0].writes, "a read-only device never writes");
            }
        }
    }

    /** Records writes, flushes and completions, and checks every write's status after each completion it delivers. */
    private static final class Recorder extends ForwardingBackend {
        final List<String> violations = new ArrayList<>();
        int flushes;
        int writes;
        int pollsWithWrites;
        private final Map<Long, Long> writeOffsets = new HashMap<>();
        private final Set<Long> finished = new HashSet<>();
        private final Map<Long, Set<Long>> coveredByFlush = new HashMap<>();
        private final Set<Long> durable = new HashSet<>();
        private DeviceRig rig;
        private int[] heads;

        Recorder(IoBackend delegate) {
            super(delegate);
        }

        synchronized void watch(DeviceRig value, int[] watched) {
            rig = value;
            heads = watched;
        }

        @Override
        public synchronized int prepareWrite(long offset, IoVector buffers, long userData) {
            int rc = super.prepareWrite(offset, buffers, userData);
            if (rc == 0) {
                writes++;
                writeOffsets.put(userData, offset);
            }
            return rc;
        }

        @Override
        public synchronized int prepareFlush(long userData) {
            int rc = super.prepareFlush(userData);
            if (rc == 0) {
                flushes++;
                coveredByFlush.put(userData, new HashSet<>(finished));
            }
            return rc;
        }

        @Override
        public synchronized int poll(CompletionSink sink, int max) {
            boolean[] sawWrite = new boolean[1];
            int n = super.poll((userData, result) -> {
                synchronized (this) {
                    Long offset = writeOffsets.remove(userData);
                    if (offset != null) {
                        finished.add(offset);
                        sawWrite[0] = true;
                    }
                    Set<Long> covered = coveredByFlush.remove(userData);
                    if (offset == null && covered != null) {
                        durable.addAll(covered);
                    }
                    sink.complete(userData, result);
                    check();
                }
            }, max);
            if (sawWrite[0]) {
                pollsWithWrites++;
            }
            return n;
        }

        private void check() {
            if (rig == null) {
                return;
            }
            for (int i = 0; i < heads.length; i++) {
                if (rig.status(0, heads[i]) == BlkRequestDescriptor.S_OK && !durable.contains(4096L * i)) {
                    violations.add("write " + i);
                }
            }
            if (!violations.isEmpty()) {
                rig = null; // one report is enough
            }
        }
    }
}
