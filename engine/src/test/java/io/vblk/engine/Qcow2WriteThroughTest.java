package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static io.vblk.engine.BlkRequestDescriptor.T_WRITE_ZEROES;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoVector;
import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;

/**
 * Write-through on a qcow2 image (virtio 1.2 5.2.5: a driver without VIRTIO_BLK_F_FLUSH gets a
 * write-through device; {@link WriteThrough}). On a fresh image every write and WRITE_ZEROES
 * allocates: clusters reserved (refcounts), data, new L2 tables and L1 entries, so the qcow2
 * driver's flush, issued after the driver completed the request (its data and L2/L1 writes
 * done), is what makes all of that durable. A recording layer around the qcow2 driver checks,
 * after every completion it delivers, that no request's status says OK before a flush of the
 * qcow2 driver that was issued after the request finished in the driver had completed. With
 * the write-through hook off (WriteThrough.active false) every write said OK with no flush.
 */
class Qcow2WriteThroughTest {
    private static final int DISK = 8 << 20;
    private static final int CLUSTER = 4096;
    /** One request every 512 KiB: four L2 tables of 4 KiB clusters (2 MiB each), all new. */
    private static final int STRIDE = 512 << 10;
    private static final int REQUESTS = DISK / STRIDE;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void allocatingWritesCompleteOnlyAfterTheQcow2DriversFlush(BackendKind kind) throws Exception {
        Path image = dir.resolve("fresh.qcow2");
        Qcow2DeviceTest.exec("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + CLUSTER, image.toString(),
                String.valueOf(DISK));
        long sizeBefore = Files.size(image);
        DriverFactory qcow2 = Qcow2.factory(image, kind, Qcow2Options.defaults());
        Recorder[] recorder = new Recorder[1];
        DriverFactory recorded = depth -> recorder[0] = new Recorder(qcow2.open(depth));
        byte[] want = new byte[DISK];
        try (DeviceRig rig = DeviceRig.builder(dir, kind).image(image).drivers(recorded, DISK).withhold(BlkFeatures.FLUSH)
                .tuning(Tuning.builder().threadingMode(ThreadingMode.SHARED).waitStrategy(WaitStrategy.BLOCKING).build())
                .build()) {
            long data = rig.buffer(0, (long) CLUSTER * REQUESTS);
            long segments = rig.buffer(0, 16L * REQUESTS);
            int[] heads = new int[REQUESTS];
            for (int i = 0; i < REQUESTS; i++) {
                long offset = (long) i * STRIDE + (i % 3) * 1024L;
                if (i % 4 == 3) {
                    // WRITE_ZEROES over part of a cluster (written as zeros: allocates it) or a
                    // whole one (a zero cluster: a new L2 entry, in a new table at i = 7, 11, 15).
                    int sectors = i % 8 == 3 ? 2 : CLUSTER / 512;
                    long at = i % 8 == 3 ? offset : (long) i * STRIDE;
                    long seg = rig.host(segments + 16L * i, 16);
                    UnsafeApi.putLong(seg, at / 512);
                    UnsafeApi.putInt(seg + 8, sectors);
                    UnsafeApi.putInt(seg + 12, 0);
                    heads[i] = rig.add(0, T_WRITE_ZEROES, 0, segments + 16L * i, 16, false);
                    recorder[0].expect(at);
                } else {
                    UnsafeApi.setMemory(rig.host(data + (long) CLUSTER * i, CLUSTER), CLUSTER, (byte) (i + 1));
                    java.util.Arrays.fill(want, (int) offset, (int) offset + CLUSTER, (byte) (i + 1));
                    heads[i] = rig.add(0, T_OUT, offset / 512, data + (long) CLUSTER * i, CLUSTER, false);
                    recorder[0].expect(offset);
                }
            }
            Recorder r = recorder[0];
            r.watch(rig, heads);
            rig.kick(0);
            for (int i = 0; i < REQUESTS; i++) {
                rig.awaitUsed(0, 10_000);
            }
            for (int i = 0; i < REQUESTS; i++) {
                assertEquals(S_OK, rig.status(0, heads[i]), "request " + i);
            }
            synchronized (r) {
                assertEquals(List.of(), r.violations, "a status said OK before a qcow2 flush covering the request completed");
                assertTrue(r.flushes >= 1, "the qcow2 driver was never flushed: nothing was made durable");
                assertEquals(REQUESTS, r.durable.size(), "every request covered by a completed flush");
            }
            // The requests did allocate (the file grew), and read back.
            assertTrue(Files.size(image) > sizeBefore, "the writes allocated nothing");
            long back = rig.buffer(0, CLUSTER);
            for (int i = 0; i < REQUESTS; i++) {
                long offset = (long) i * STRIDE + (i % 3) * 1024L;
                assertEquals(S_OK, rig.roundTrip(0, T_IN, offset / 512, back, CLUSTER, true));
                byte[] got = new byte[CLUSTER];
                UnsafeApi.copyMemory(null, rig.host(back, CLUSTER), got, UnsafeApi.arrayBaseOffset(byte[].class), CLUSTER);
                assertArrayEquals(java.util.Arrays.copyOfRange(want, (int) offset, (int) offset + CLUSTER), got,
                        "request " + i + " read back");
            }
        }
        assertEquals("", Qcow2DeviceTest.exec("qemu-img", "check", "-q", image.toString()).trim());
    }

    /**
     * Forwards to the qcow2 driver, recording its guest-request completions and its flushes: a
     * flush covers the requests the driver had completed when it was issued, once it completes.
     */
    private static final class Recorder implements BlockDriver {
        private final BlockDriver real;
        final List<String> violations = new ArrayList<>();
        int flushes;
        /** Offsets of the changing requests, by the tag the device gave them. */
        private final Map<Long, Long> changeTags = new HashMap<>();
        private final Set<Long> finished = new HashSet<>();
        private final Map<Long, Set<Long>> coveredByFlush = new HashMap<>();
        final Set<Long> durable = new HashSet<>();
        private DeviceRig rig;
        private int[] heads;
        private final List<Long> headOffsets = new ArrayList<>();

        Recorder(BlockDriver real) {
            this.real = real;
        }

        synchronized void expect(long offset) {
            headOffsets.add(offset);
        }

        synchronized void watch(DeviceRig value, int[] watched) {
            rig = value;
            heads = watched;
        }

        @Override
        public synchronized int write(long offset, IoVector buffers, long tag) {
            int rc = real.write(offset, buffers, tag);
            if (rc == 0) {
                changeTags.put(tag, offset);
            }
            return rc;
        }

        @Override
        public synchronized int writeZeroes(long offset, long length, boolean mayUnmap, long tag) {
            int rc = real.writeZeroes(offset, length, mayUnmap, tag);
            if (rc == 0) {
                changeTags.put(tag, offset);
            }
            return rc;
        }

        @Override
        public synchronized int flush(long tag) {
            int rc = real.flush(tag);
            if (rc == 0) {
                flushes++;
                coveredByFlush.put(tag, new HashSet<>(finished));
            }
            return rc;
        }

        @Override
        public synchronized int poll(CompletionSink sink, int max) {
            return real.poll((tag, result) -> {
                synchronized (this) {
                    Long offset = changeTags.remove(tag);
                    Set<Long> covered = coveredByFlush.remove(tag);
                    if (offset != null) {
                        finished.add(offset);
                    } else if (covered != null && result == 0) {
                        durable.addAll(covered);
                    }
                    sink.complete(tag, result);
                    check();
                }
            }, max);
        }

        private void check() {
            if (rig == null) {
                return;
            }
            for (int i = 0; i < heads.length; i++) {
                if (rig.status(0, heads[i]) == S_OK && !durable.contains(headOffsets.get(i))) {
                    violations.add("request " + i + " at " + headOffsets.get(i));
                }
            }
            if (!violations.isEmpty()) {
                rig = null; // one report is enough
            }
        }

        @Override
        public String format() {
            return real.format();
        }

        @Override
        public long sizeBytes() {
            return real.sizeBytes();
        }

        @Override
        public boolean readOnly() {
            return real.readOnly();
        }

        @Override
        public int depth() {
            return real.depth();
        }

        @Override
        public int freeSlots() {
            return real.freeSlots();
        }

        @Override
        public int read(long offset, IoVector buffers, long tag) {
            return real.read(offset, buffers, tag);
        }

        @Override
        public int discard(long offset, long length, long tag) {
            return real.discard(offset, length, tag);
        }

        @Override
        public int submit() {
            return real.submit();
        }

        @Override
        public int pendingSubmit() {
            return real.pendingSubmit();
        }

        @Override
        public int inFlight() {
            return real.inFlight();
        }

        @Override
        public int reclaimLostSlots() {
            return real.reclaimLostSlots();
        }

        @Override
        public boolean reapOnSubmittingThread() {
            return real.reapOnSubmittingThread();
        }

        @Override
        public boolean completionsReady() {
            return real.completionsReady();
        }

        @Override
        public boolean singleIssuer() {
            return real.singleIssuer();
        }

        @Override
        public boolean closedDrained() {
            return real.closedDrained();
        }

        @Override
        public void whenDrained(Runnable action) {
            real.whenDrained(action);
        }

        @Override
        public boolean registrationPending() {
            return real.registrationPending();
        }

        @Override
        public io.vblk.aio.RingSleep sleepInRing() {
            return real.sleepInRing();
        }

        @Override
        public int completionSources() {
            return real.completionSources();
        }

        @Override
        public int completionFd(int i) {
            return real.completionFd(i);
        }

        @Override
        public void acknowledge(int i) {
            real.acknowledge(i);
        }

        @Override
        public int awaitCompletions(int timeoutMs) {
            return real.awaitCompletions(timeoutMs);
        }

        @Override
        public java.util.List<io.vblk.aio.Image> files() {
            return real.files();
        }

        @Override
        public void close() {
            real.close();
        }

        @Override
        public void closeWithin(long timeoutNs) {
            real.closeWithin(timeoutNs);
        }
    }
}
