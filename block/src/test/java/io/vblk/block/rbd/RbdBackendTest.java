package io.vblk.block.rbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/** The RBD driver against a real one-node Ceph cluster (scripts/ceph/start). */
class RbdBackendTest {
    private static final long MiB = 1 << 20;
    private static CephCluster ceph;
    private static Path dir;

    @BeforeAll
    static void startCluster() throws Exception {
        assumeTrue(CephCluster.installed(),
                "Ceph is not installed here (ceph-mon, ceph-osd, librbd1; .ci/run installs them): RBD tests skipped");
        dir = Files.createTempDirectory("vblk-ceph");
        ceph = CephCluster.start(dir.resolve("cluster"), "memstore");
    }

    @AfterAll
    static void stopCluster() throws Exception {
        if (ceph != null) {
            ceph.close();
        }
    }

    static NativeBuffer buffer(int size) {
        return new NativeBuffer(size, 4096);
    }

    static void fill(NativeBuffer b, int seed) {
        for (int i = 0; i < b.capacity(); i += 4) {
            b.buffer().putInt(i, seed * 1_000_003 + i);
        }
    }

    static boolean matches(NativeBuffer b, int seed) {
        for (int i = 0; i < b.capacity(); i += 4) {
            if (b.buffer().getInt(i) != seed * 1_000_003 + i) {
                return false;
            }
        }
        return true;
    }

    static IoVector vector(NativeBuffer... bs) {
        IoVector v = new IoVector(bs.length);
        for (NativeBuffer b : bs) {
            v.add(b.address(), b.capacity());
        }
        return v;
    }

    static Map<Long, Long> await(IoBackend io, int count) {
        Map<Long, Long> results = new HashMap<>();
        io.submit();
        long deadline = System.currentTimeMillis() + 60_000;
        while (results.size() < count && System.currentTimeMillis() < deadline) {
            io.completionEvent().read();
            if (io.poll(results::put, 1024) == 0) {
                io.awaitCompletions(50);
            }
        }
        return results;
    }

    static long one(IoBackend io, int rc) {
        assertEquals(0, rc, "prepare");
        Map<Long, Long> r = await(io, 1);
        assertEquals(1, r.size(), "completed");
        return r.values().iterator().next();
    }

    @Test
    void writesReadsAndFlushesWithSegmentsAndSizeComesFromTheImage() throws Exception {
        ceph.run("rbd", "create", "rbd/rw", "--size", "64M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("rw"), RbdOptions.defaults())) {
            assertEquals(64 * MiB, disk.sizeBytes());
            assertFalse(disk.readOnly());
            NativeBuffer a = buffer(4096);
            NativeBuffer b = buffer(8192);
            fill(a, 1);
            fill(b, 2);
            assertEquals(12288, one(disk, disk.prepareWrite(5 * MiB, vector(a, b), 7)));
            assertEquals(0, one(disk, disk.prepareFlush(8)));
            NativeBuffer r = buffer(12288);
            assertEquals(12288, one(disk, disk.prepareRead(5 * MiB, vector(r), 9)));
            for (int i = 0; i < 4096; i += 4) {
                assertEquals(1 * 1_000_003 + i, r.buffer().getInt(i));
            }
            for (int i = 0; i < 8192; i += 4) {
                assertEquals(2 * 1_000_003 + i, r.buffer().getInt(4096 + i));
            }
        }
        // What rbd itself reads back.
        Path out = dir.resolve("rw.raw");
        ceph.run("rbd", "export", "rbd/rw", out.toString());
        ByteBuffer bytes = ByteBuffer.wrap(Files.readAllBytes(out)).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(1_000_003, bytes.getInt((int) (5 * MiB)));
    }

    /**
     * A clean close of a written, writable image calls rbd_flush before rbd_close (as QEMU's
     * bdrv_close flushes): with librbd's writeback cache on (:rbd_cache=true) the cached writes
     * reach the OSDs under a flush whose failure close can log, not only inside rbd_close. A
     * read-only image, and a writable one only read, never flush. rbd export reads the write back.
     */
    @Test
    void aCleanCloseFlushesAWrittenImageAndNeverAReadOnlyOne() throws Exception {
        ceph.run("rbd", "create", "rbd/closeflush", "--size", "8M");
        String address = ceph.address("closeflush") + ":rbd_cache=true";
        NativeBuffer b = buffer(4096);
        RbdBackend disk = RbdBackend.open(address, RbdOptions.defaults());
        fill(b, 5);
        assertEquals(4096, one(disk, disk.prepareWrite(MiB, vector(b), 1)));
        disk.close();
        assertEquals(1, disk.closeFlushes(), "written: flushed at close");
        RbdBackend reader = RbdBackend.open(address, RbdOptions.defaults());
        assertEquals(4096, one(reader, reader.prepareRead(MiB, vector(b), 2)));
        reader.close();
        assertEquals(0, reader.closeFlushes(), "only read: nothing to flush");
        RbdBackend ro = RbdBackend.open(address, RbdOptions.defaults().withReadOnly(true));
        assertEquals(4096, one(ro, ro.prepareRead(MiB, vector(b), 3)));
        assertTrue(matches(b, 5));
        ro.close();
        assertEquals(0, ro.closeFlushes(), "read-only: never flushed");
        Path out = dir.resolve("closeflush.raw");
        ceph.run("rbd", "export", "rbd/closeflush", out.toString());
        ByteBuffer bytes = ByteBuffer.wrap(Files.readAllBytes(out)).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(5 * 1_000_003, bytes.getInt((int) MiB));
    }

    /**
     * librbd writes the completion eventfd once per completion, whether or not a poll takes it:
     * after polls that reaped a lump without sleeping it stayed readable, and the I/O thread's
     * next sleep woke at once to nothing (the back end took IoBackend's default rearm, which
     * resets nothing). The rearm resets it and asks for one more poll; with nothing reaped since,
     * it reads nothing and the next completion still raises the eventfd.
     */
    @Test
    void rearmResetsTheEventfdThatCompletionsAlreadyReapedLeftRaised() throws Exception {
        ceph.run("rbd", "create", "rbd/rearm", "--size", "8M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("rearm"), RbdOptions.defaults())) {
            NativeBuffer b = buffer(4096);
            fill(b, 9);
            for (int i = 0; i < 8; i++) {
                assertEquals(0, disk.prepareWrite(i * 4096L, vector(b), i));
            }
            disk.submit();
            Map<Long, Long> results = new HashMap<>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (results.size() < 8 && System.currentTimeMillis() < deadline) {
                if (disk.poll(results::put, 1024) == 0) {
                    Thread.sleep(1); // busy rounds: the eventfd is never read
                }
            }
            assertEquals(8, results.size(), "completed: " + results);
            int fd = disk.completionEvent().fd();
            assertTrue(eventfdCount(fd) > 0, "librbd raised the eventfd for the completions polled");
            assertTrue(disk.rearmCompletions(), "reset: one more poll asked for");
            assertEquals(0, eventfdCount(fd), "still readable after the rearm: the sleep would wake to nothing");
            assertEquals(0, disk.poll(results::put, 1024));
            assertFalse(disk.rearmCompletions(), "nothing reaped since the reset: nothing to reset or poll");
            assertEquals(0, disk.prepareRead(0, vector(buffer(4096)), 99));
            disk.submit();
            assertEquals(1, disk.awaitCompletions(60_000), "the next completion raises the eventfd again");
            Map<Long, Long> after = new HashMap<>();
            while (after.isEmpty() && System.currentTimeMillis() < deadline) {
                disk.poll(after::put, 1024);
            }
            assertEquals(4096L, after.get(99L));
        }
    }

    /** The counter of eventfd {@code fd} of this process, from its fdinfo (nothing consumed). */
    static long eventfdCount(int fd) throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/fdinfo/" + fd))) {
            if (line.startsWith("eventfd-count:")) {
                return Long.parseLong(line.substring("eventfd-count:".length()).trim(), 16);
            }
        }
        throw new AssertionError("fd " + fd + " is not an eventfd");
    }

    /**
     * The client configuration the data plane sets (issue 14): no librbd cache (QEMU's
     * cache=none) and one librados completion thread; an address option overrides either.
     */
    @Test
    void setsTheDataPlanesClientOptionsAndTheAddressOverridesThem() throws Exception {
        ceph.run("rbd", "create", "rbd/conf", "--size", "4M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("conf"), RbdOptions.defaults())) {
            assertEquals("false", disk.clientOption("rbd_cache"));
            assertEquals("1", disk.clientOption("librados_thread_count"));
            assertNull(disk.clientOption("no_such_ceph_option"));
            NativeBuffer b = buffer(4096);
            fill(b, 5);
            assertEquals(4096, one(disk, disk.prepareWrite(0, vector(b), 1)));
            NativeBuffer r = buffer(4096);
            assertEquals(4096, one(disk, disk.prepareRead(0, vector(r), 2)));
            assertTrue(matches(r, 5));
        }
        try (RbdBackend disk = RbdBackend.open(ceph.address("conf") + ":librados_thread_count=2:rbd_cache=true",
                RbdOptions.defaults())) {
            assertEquals("2", disk.clientOption("librados_thread_count"));
            assertEquals("true", disk.clientOption("rbd_cache"));
            NativeBuffer r = buffer(4096);
            assertEquals(4096, one(disk, disk.prepareRead(0, vector(r), 3)));
            assertTrue(matches(r, 5));
        }
    }

    /** Online resize of a raw RBD disk through its block driver: rbd_resize, then I/O past the old end. */
    @Test
    void aRawRbdDriverGrowsTheImageOnline() throws Exception {
        ceph.run("rbd", "create", "rbd/grow", "--size", "8M");
        io.vblk.block.NetworkDisk disk = io.vblk.block.NetworkDisk.open(ceph.address("grow"), false);
        try (io.vblk.block.BlockDriver d = disk.open(8)) {
            NativeBuffer w = buffer(4096);
            fill(w, 41);
            IoVector v = vector(w);
            assertEquals(-Errno.EINVAL, d.write(12 * MiB, v, 1), "past the end before the resize");
            d.resize(16 * MiB);
            assertEquals(16 * MiB, d.sizeBytes());
            assertEquals(16 * MiB, disk.sizeBytes());
            assertEquals(0, d.write(12 * MiB, v, 2));
            d.submit();
            Map<Long, Long> done = new HashMap<>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (done.isEmpty() && System.currentTimeMillis() < deadline) {
                if (d.poll(done::put, 4) == 0) {
                    d.awaitCompletions(50);
                    d.acknowledgeCompletions();
                }
            }
            assertEquals(4096L, done.get(2L));
        }
        assertTrue(ceph.run("rbd", "info", "rbd/grow").contains("16 MiB"), "rbd info shows the new size");
        Path out = dir.resolve("grow.raw");
        ceph.run("rbd", "export", "rbd/grow", out.toString());
        ByteBuffer bytes = ByteBuffer.wrap(Files.readAllBytes(out)).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(41 * 1_000_003, bytes.getInt((int) (12 * MiB)));
    }

    /** An NBD-style refusal does not apply: a snapshot cannot be resized, with the reason. */
    @Test
    void aSnapshotRefusesAResize() throws Exception {
        ceph.run("rbd", "create", "rbd/snapgrow", "--size", "4M");
        ceph.run("rbd", "snap", "create", "rbd/snapgrow@s");
        try (RbdBackend disk = RbdBackend.open(ceph.address("snapgrow@s"), RbdOptions.defaults())) {
            java.io.IOException e = assertThrows(java.io.IOException.class, () -> disk.resize(8 * MiB));
            assertTrue(e.getMessage().contains("read-only"), e.getMessage());
            assertEquals(4 * MiB, disk.sizeBytes());
        }
    }

    @Test
    void acceptsAsManySegmentsAsQemuOffersByDefault() throws Exception {
        ceph.run("rbd", "create", "rbd/segs", "--size", "4M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("segs"), RbdOptions.defaults())) {
            NativeBuffer[] w = new NativeBuffer[254];
            NativeBuffer[] r = new NativeBuffer[254];
            for (int i = 0; i < 254; i++) {
                w[i] = buffer(4096);
                fill(w[i], 300 + i);
                r[i] = buffer(4096);
            }
            assertEquals(254 * 4096, one(disk, disk.prepareWrite(0, vector(w), 1)));
            assertEquals(254 * 4096, one(disk, disk.prepareRead(0, vector(r), 2)));
            for (int i = 0; i < 254; i++) {
                assertTrue(matches(r[i], 300 + i), "segment " + i);
            }
        }
    }

    @Test
    void manyRequestsInFlight() throws Exception {
        ceph.run("rbd", "create", "rbd/deep", "--size", "64M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("deep"), RbdOptions.defaults().withDepth(64))) {
            NativeBuffer[] bufs = new NativeBuffer[64];
            for (int i = 0; i < 64; i++) {
                bufs[i] = buffer(4096);
                fill(bufs[i], 10 + i);
                assertEquals(0, disk.prepareWrite(i * 1_048_576L + 4096L * i, vector(bufs[i]), i));
            }
            assertEquals(-Errno.EAGAIN, disk.prepareFlush(99));
            Map<Long, Long> done = await(disk, 64);
            assertEquals(64, done.size());
            done.values().forEach(v -> assertEquals(4096L, v));
            for (int i = 0; i < 64; i++) {
                UnsafeApi.setMemory(bufs[i].address(), 4096, (byte) 0x5a);
                assertEquals(0, disk.prepareRead(i * 1_048_576L + 4096L * i, vector(bufs[i]), 100 + i));
            }
            done = await(disk, 64);
            assertEquals(64, done.size());
            for (int i = 0; i < 64; i++) {
                assertTrue(matches(bufs[i], 10 + i), "read " + i);
            }
            assertEquals(0, disk.inFlight());
        }
    }

    @Test
    void discardAndWriteZeroesReadBackAsZeros() throws Exception {
        ceph.run("rbd", "create", "rbd/zero", "--size", "16M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("zero"), RbdOptions.defaults())) {
            NativeBuffer w = buffer(4 << 20);
            fill(w, 3);
            assertEquals(4 << 20, one(disk, disk.prepareWrite(0, vector(w), 1)));
            assertEquals(0, one(disk, disk.prepareWriteZeroes(65536, 65536, false, 2)));
            assertEquals(0, one(disk, disk.prepareDiscard(0, 4 << 20, 3)), "a whole object");
            assertEquals(4 << 20, one(disk, disk.prepareWrite(4 << 20, vector(w), 4)));
            assertEquals(0, one(disk, disk.prepareWriteZeroes((4 << 20) + 8192, 4096, true, 5)));
            NativeBuffer r = buffer(4 << 20);
            assertEquals(4 << 20, one(disk, disk.prepareRead(0, vector(r), 6)));
            for (int i = 0; i < r.capacity(); i++) {
                assertEquals(0, r.buffer().getByte(i), "discarded byte " + i);
            }
            assertEquals(4 << 20, one(disk, disk.prepareRead(4 << 20, vector(r), 7)));
            for (int i = 8192; i < 12288; i++) {
                assertEquals(0, r.buffer().getByte(i), "zeroed byte " + i);
            }
            assertEquals(3 * 1_000_003 + 12288, r.buffer().getInt(12288));
        }
    }

    @Test
    void aSnapshotIsAReadOnlyDiskWithTheSnapshotsData() throws Exception {
        ceph.run("rbd", "create", "rbd/snapped", "--size", "8M");
        NativeBuffer w = buffer(4096);
        try (RbdBackend disk = RbdBackend.open(ceph.address("snapped"), RbdOptions.defaults())) {
            fill(w, 21);
            assertEquals(4096, one(disk, disk.prepareWrite(0, vector(w), 1)));
            assertEquals(0, one(disk, disk.prepareFlush(2)));
        }
        ceph.run("rbd", "snap", "create", "rbd/snapped@s1");
        ceph.run("rbd", "resize", "rbd/snapped", "--size", "16M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("snapped"), RbdOptions.defaults())) {
            assertEquals(16 * MiB, disk.sizeBytes(), "the image's new size");
            fill(w, 22);
            assertEquals(4096, one(disk, disk.prepareWrite(0, vector(w), 1)));
        }
        try (RbdBackend snap = RbdBackend.open("rbd:rbd/snapped@s1:conf=" + ceph.conf, RbdOptions.defaults())) {
            assertTrue(snap.readOnly());
            assertEquals(8 * MiB, snap.sizeBytes(), "the snapshot's size");
            assertEquals(-Errno.EROFS, snap.prepareWrite(0, vector(w), 1));
            assertEquals(-Errno.EROFS, snap.prepareDiscard(0, 4096, 1));
            assertEquals(-Errno.EROFS, snap.prepareWriteZeroes(0, 4096, true, 1));
            assertEquals(4096, one(snap, snap.prepareRead(0, vector(w), 2)));
            assertTrue(matches(w, 21), "the data as it was at the snapshot");
        }
    }

    @Test
    void refusesOutOfRangeRequestsAndMissingImages() throws Exception {
        ceph.run("rbd", "create", "rbd/small", "--size", "1M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("small"), RbdOptions.defaults().withMaxSegments(2))) {
            NativeBuffer b = buffer(4096);
            assertEquals(-Errno.EINVAL, disk.prepareRead(MiB - 2048, vector(b), 1));
            assertEquals(-Errno.EINVAL, disk.prepareWrite(-4096, vector(b), 1));
            assertEquals(-Errno.EINVAL, disk.prepareRead(Long.MAX_VALUE - 10, vector(b), 1));
            assertEquals(-Errno.EINVAL, disk.prepareDiscard(0, 2 * MiB, 1));
            assertEquals(-Errno.EINVAL, disk.prepareRead(0, vector(b, b, b), 1));
            assertEquals(disk.depth(), disk.freeSlots());
        }
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> RbdBackend.open(ceph.address("nope"), RbdOptions.defaults()));
        assertTrue(e.getMessage().contains("nope"), e.getMessage());
    }

    /**
     * Another client shrinks the image under an open disk. A read wholly past the new end fails;
     * a read straddling it is clipped by librbd, which returns the shorter length: the tail must
     * come back as zeros, never as the guest buffer's stale bytes behind a full-length success.
     */
    @Test
    void aReadStraddlingAnEndAnotherClientShrankZeroFillsTheTail() throws Exception {
        ceph.run("rbd", "create", "rbd/shrink", "--size", "64M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("shrink"), RbdOptions.defaults())) {
            NativeBuffer w = buffer(65536);
            fill(w, 3);
            assertEquals(65536, one(disk, disk.prepareWrite(32 * MiB - 4096, vector(w), 1)));
            ceph.run("rbd", "resize", "--allow-shrink", "--size", "32M", "rbd/shrink");
            NativeBuffer r = buffer(65536);
            long deadline = System.currentTimeMillis() + 30_000;
            long past;
            do { // the watch tells the open image of the new size soon after
                past = one(disk, disk.prepareRead(40 * MiB, vector(r), 2));
            } while (past >= 0 && System.currentTimeMillis() < deadline && sleep(100));
            assertTrue(past < 0, "a read wholly past the shrunk end: " + past);
            UnsafeApi.setMemory(r.address(), r.capacity(), (byte) 0x5a);
            long rc = one(disk, disk.prepareRead(32 * MiB - 4096, vector(r), 3));
            assertTrue(rc == 65536 || rc < 0, "rc " + rc);
            if (rc == 65536) {
                for (int i = 0; i < 4096; i += 4) {
                    assertEquals(3 * 1_000_003 + i, r.buffer().getInt(i), "byte " + i + " before the end");
                }
                int stale = 0;
                for (int i = 4096; i < 65536; i++) {
                    stale += r.buffer().getByte(i) != 0 ? 1 : 0;
                }
                assertEquals(0, stale, "bytes past the shrunk end not zero");
            }
        }
    }

    private static boolean sleep(long ms) throws InterruptedException {
        Thread.sleep(ms);
        return true;
    }
}
