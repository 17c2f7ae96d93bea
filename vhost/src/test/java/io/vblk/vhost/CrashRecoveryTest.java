package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.GatedBackend;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.SplitQueueDriver;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Crash recovery with VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, as QEMU drives it with
 * {@code reconnect=1}: a backend dies with requests in flight; QEMU keeps the inflight buffer
 * and the guest's memory, rewinds its available index to {@code used.idx}, and hands both to the
 * backend that takes over. The new backend must redo exactly the requests that were in flight:
 * each once, none that had completed, none lost, even when they completed out of order.
 *
 * <p>The region layout is written out here from vhost-user.rst, independently of
 * {@code InflightDescriptor}: queue region {u64 features, u16 version @8, u16 desc_num @10,
 * u16 last_batch_head @12, u16 used_idx @14, desc[] @16}, desc {u8 inflight @0, u16 next @6,
 * u64 counter @8}, 16 bytes each.
 */
class CrashRecoveryTest {
    static final long PROTOCOL = VhostUserProtocolTest.ALL_PROTOCOL | VhostUserFrontend.PF_INFLIGHT_SHMFD;
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    /** Sector of request {@code i}: 8 KiB apart, away from anything else the tests write. */
    private static long sector(int i) {
        return 256 + 16L * i;
    }

    private static byte[] imageBytes(Path image, long offset, int length) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "r")) {
            byte[] b = new byte[length];
            f.seek(offset);
            f.readFully(b);
            return b;
        }
    }

    /** Queues write {@code i} (its own data buffer and sector, not yet published) and returns its head. */
    private static int addWrite(BlkQueue q, int i) {
        long data = q.dataGpa + (long) BLOCK * i;
        byte[] pattern = BlkQueue.pattern(sector(i), BLOCK, 40 + i);
        UnsafeApi.copyMemory(pattern, UnsafeApi.arrayBaseOffset(byte[].class), null, q.host(data), BLOCK);
        return q.add(BlkQueue.T_OUT, sector(i), data, BLOCK, false);
    }

    /** Waits up to 30 s (a hang guard) for {@code condition}. */
    private static void await(String what, java.util.function.BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(5);
        }
    }

    /** The driver has nothing more in its used ring, after giving a stray completion time to land. */
    private static void assertNoMoreCompletions(BlkQueue q) throws InterruptedException {
        Thread.sleep(200);
        assertEquals(SplitQueueDriver.NONE, q.driver.reap(), "a request completed twice or unasked: " + q.driver);
    }

    /** Checks a queue region at rest: version 1, every flag clear, used_idx caught up with the ring. */
    private static void assertRegionAtRest(int fd, long mmapSize, int queueSize, int usedIdx) {
        try (Mapping m = Mapping.map(fd, 0, mmapSize, true, false)) {
            long a = m.address();
            assertEquals(1, UnsafeApi.getShort(a + 8), "version");
            assertEquals(queueSize, UnsafeApi.getShort(a + 10) & 0xffff, "desc_num");
            assertEquals(usedIdx, UnsafeApi.getShort(a + 14) & 0xffff, "used_idx");
            for (int h = 0; h < queueSize; h++) {
                assertEquals(0, UnsafeApi.getByte(a + 16 + 16L * h), "desc[" + h + "].inflight");
            }
        }
    }

    /**
     * The whole story with real parts: backend A pops twelve writes, completes eight of them out
     * of order, and freezes with four in flight, two of them behind the used index QEMU rewinds
     * to and two ahead of it; the connection drops. Backend B gets the guest's memory, the
     * inflight buffer and QEMU's rewound base, and executes exactly the four, once each.
     */
    @Test
    void aBackendThatDiesWithRequestsInFlightIsReplacedByOneThatRedoesExactlyThose() throws Exception {
        int requests = 12;
        Set<Integer> heldRequests = Set.of(2, 5, 6, 9);
        Set<Long> heldOffsets = new HashSet<>();
        for (int i : heldRequests) {
            heldOffsets.add(sector(i) * 512);
        }
        Path dirA = Files.createDirectory(dir.resolve("a"));
        Path dirB = Files.createDirectory(dir.resolve("b"));
        GatedBackend.Holder backendA = new GatedBackend.Holder(heldOffsets);
        try (ServerRig a = ServerRig.start(dirA, 1, f -> depth -> backendA.wrap(f.open(depth))); TestGuest g = new TestGuest()) {
            try {
                BlkQueue q = g.queue(0, 64, true);
                Set<Integer> heldHeads = new TreeSet<>();
                Set<Integer> completedHeads = new TreeSet<>();
                VhostUserFrontend.Inflight buffer;
                try (QemuFlow first = new QemuFlow(a.connect(), g, 1)) {
                    first.init(PROTOCOL, q);
                    first.start(first.linuxFeatures(), true, null, q);
                    for (int i = 0; i < requests; i++) {
                        int head = addWrite(q, i);
                        (heldRequests.contains(i) ? heldHeads : completedHeads).add(head);
                    }
                    q.publish();
                    Set<Integer> done = new TreeSet<>();
                    for (int i = 0; i < requests - heldRequests.size(); i++) {
                        done.add(q.awaitUsed());
                    }
                    assertEquals(completedHeads, done);
                    await("A to hold 4 writes", () -> backendA.held() == heldRequests.size());
                    // QEMU keeps the buffer: its own descriptor outlives the connection.
                    VhostUserFrontend.Inflight b = first.inflight;
                    buffer = new VhostUserFrontend.Inflight(b.mmapSize(), b.mmapOffset(), b.numQueues(), b.queueSize(),
                            Native.libc().dup(b.fd()));
                } // the connection drops as if A died: A stops popping, its four writes never complete
                await("A to stop its ring", () -> !a.server.device().isRunning(0));
                int usedIdx = q.driver.usedIdx();
                assertEquals(requests - heldRequests.size(), usedIdx);

                Files.createSymbolicLink(dirB.resolve("disk.img"), dirA.resolve("disk.img"));
                GatedBackend.Holder backendB = new GatedBackend.Holder(Set.of());
                try (ServerRig b = ServerRig.start(dirB, 1, f -> depth -> backendB.wrap(f.open(depth)));
                     QemuFlow second = new QemuFlow(b.connect(), g, 1)) {
                    second.inflight = buffer;
                    second.init(PROTOCOL, q);
                    // QEMU's GET_VRING_BASE failed, so it rewound to used.idx.
                    second.start(second.linuxFeatures(), true, new int[] {usedIdx}, q);
                    Set<Integer> redone = new TreeSet<>();
                    for (int i = 0; i < heldRequests.size(); i++) {
                        redone.add(q.awaitUsed());
                    }
                    assertEquals(heldHeads, redone, "exactly the requests in flight are completed");
                    assertNoMoreCompletions(q);
                    for (int i = 0; i < requests; i++) {
                        assertEquals(0, q.status(i), "status of request " + i);
                    }
                    List<Long> executed = new ArrayList<>(backendB.writeOffsets);
                    executed.sort(null);
                    assertEquals(new ArrayList<>(new TreeSet<>(heldOffsets)), executed,
                            "B wrote each in-flight request once");
                    String line = b.awaitLine(l -> l.contains("inflight recovery"));
                    assertTrue(line.contains("resubmitting 4 request(s)") && line.contains("resuming at avail index 12")
                            && line.contains("the frontend said 8"), line);
                    for (int i = 0; i < requests; i++) {
                        assertArrayEquals(BlkQueue.pattern(sector(i), BLOCK, 40 + i),
                                imageBytes(dirA.resolve("disk.img"), sector(i) * 512, BLOCK), "data of request " + i);
                    }

                    byte[] more = BlkQueue.pattern(900, BLOCK, 7);
                    q.write(900, more);
                    assertArrayEquals(more, q.read(900, BLOCK));
                    assertEquals(requests + 2, second.stop(q)[0], "the ring resumed past the requests A had taken");
                    assertRegionAtRest(buffer.fd(), buffer.mmapSize(), 64, q.driver.usedIdx());
                }
            } finally {
                // A's teardown waits for its writes: let them go so A can close.
                backendA.release();
            }
        }
    }

    /**
     * The narrowest window: the previous backend published a batch (used.idx moved) and died
     * before clearing its flags. Constructed by hand: six writes popped in the order their
     * counters say; h1 and h3 completed and recorded; h4 and h0 completed and published but still
     * flagged, linked from last_batch_head; h5 and h2 in flight. Only h5 and h2 may run, in
     * that order, and none of the four completed writes may reach the image.
     */
    @Test
    void aBatchPublishedButNotRecordedIsNotRedone() throws Exception {
        GatedBackend.Holder recorder = new GatedBackend.Holder(Set.of());
        try (ServerRig rig = ServerRig.start(dir, 1, f -> depth -> recorder.wrap(f.open(depth))); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            int size = 32; // six requests of three descriptors
            BlkQueue q = g.queue(0, size, true);
            qemu.init(PROTOCOL, q);
            qemu.inflight = qemu.f.getInflightFd(1, size);
            assertEquals(((16 + 16 * size + 63) / 64) * 64, qemu.inflight.mmapSize());

            int[] h = new int[6];
            for (int i = 0; i < 6; i++) {
                h[i] = addWrite(q, i);
            }
            q.publish();
            // What the guest saw: h1, h3 (batch 1), then h4, h0 (batch 2), used.idx 4.
            int[] completed = {h[1], h[3], h[4], h[0]};
            long used = q.driver.usedGpa();
            for (int i = 0; i < completed.length; i++) {
                long element = q.driver.hostAddress(used + 4 + 8L * i, 8);
                UnsafeApi.putInt(element, completed[i]);
                UnsafeApi.putInt(element + 4, 1);
            }
            UnsafeApi.putShort(q.driver.hostAddress(used + 2, 2), (short) 4);
            Set<Integer> reaped = new TreeSet<>();
            for (int i = 0; i < completed.length; i++) {
                reaped.add(q.driver.reap());
            }
            assertEquals(Set.of(h[0], h[1], h[3], h[4]), reaped);

            long[] counters = {10, 11, 15, 12, 13, 14}; // by request: h5 was popped before h2
            try (Mapping m = Mapping.map(qemu.inflight.fd(), 0, qemu.inflight.mmapSize(), false, false)) {
                long r = m.address();
                UnsafeApi.putShort(r + 8, (short) 1);
                UnsafeApi.putShort(r + 10, (short) size);
                UnsafeApi.putShort(r + 12, (short) h[0]);
                UnsafeApi.putShort(r + 14, (short) 2);
                for (int i = 0; i < 6; i++) {
                    UnsafeApi.putLong(r + 16 + 16L * h[i] + 8, counters[i]);
                }
                for (int i : new int[] {0, 4, 2, 5}) {
                    UnsafeApi.putByte(r + 16 + 16L * h[i], (byte) 1);
                }
                UnsafeApi.putShort(r + 16 + 16L * h[0] + 6, (short) h[4]);
                UnsafeApi.putShort(r + 16 + 16L * h[4] + 6, (short) h[3]);
                UnsafeApi.putShort(r + 16 + 16L * h[3] + 6, (short) h[1]);
            }

            qemu.start(qemu.linuxFeatures(), true, new int[] {4}, q);
            Set<Integer> redone = new TreeSet<>();
            redone.add(q.awaitUsed());
            redone.add(q.awaitUsed());
            assertEquals(new TreeSet<>(Set.of(h[2], h[5])), redone);
            assertNoMoreCompletions(q);
            assertEquals(0, q.status(2));
            assertEquals(0, q.status(5));
            String line = rig.awaitLine(l -> l.contains("inflight recovery"));
            assertTrue(line.contains("resubmitting 2 request(s) (heads " + h[5] + " " + h[2] + ")")
                    && line.contains("2 of the last batch were already completed")
                    && line.contains("resuming at avail index 6"), line);

            Path image = dir.resolve("disk.img");
            for (int i = 0; i < 6; i++) {
                byte[] want = i == 2 || i == 5 ? BlkQueue.pattern(sector(i), BLOCK, 40 + i) : new byte[BLOCK];
                assertArrayEquals(want, imageBytes(image, sector(i) * 512, BLOCK), "request " + i);
            }
            List<Long> executed = new ArrayList<>(recorder.writeOffsets);
            executed.sort(null);
            assertEquals(List.of(sector(2) * 512, sector(5) * 512), executed);
            assertEquals(6, qemu.stop(q)[0]);
            assertRegionAtRest(qemu.inflight.fd(), qemu.inflight.mmapSize(), size, 6);
        }
    }
}
