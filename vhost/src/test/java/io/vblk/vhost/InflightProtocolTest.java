package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;

import io.vblk.sys.EventFd;
import io.vblk.sys.Mapping;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * GET/SET_INFLIGHT_FD as QEMU 7.2's vhost-user-blk sends them (GET once, SET at every start,
 * after the first SET_FEATURES), and everything a frontend can get wrong in them: each bad case
 * is refused (GET answered with no buffer, SET with a failed acknowledgement or, where the
 * frontend cannot be told, the connection closed), logged, and the server goes on.
 */
class InflightProtocolTest extends OneServerCase {
    static final long PROTOCOL = CrashRecoveryTest.PROTOCOL;

    @Test
    void inflightShmfdIsOfferedAndTracksEveryRequestOfAQemuSession() throws Exception {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 128, true);
            qemu.init(PROTOCOL, q);
            assertEquals(PROTOCOL, qemu.protocol, "INFLIGHT_SHMFD is offered");
            qemu.start(qemu.linuxFeatures(), true, null, q);
            VhostUserFrontend.Inflight b = qemu.inflight;
            assertEquals(2112, b.mmapSize(), "one region of 16 + 16 x 128 bytes, rounded up to 64");
            assertEquals(0, b.mmapOffset());
            assertEquals(1, b.numQueues());
            assertEquals(128, b.queueSize());
            assertTrue(Files.size(Path.of("/proc/self/fd/" + b.fd())) >= b.mmapSize(), "the memfd holds the buffer");
            assertEquals(-1, Native.libc().ftruncate(b.fd(), 0), "sealed: the frontend cannot cut it short");

            byte[] data = BlkQueue.pattern(8, 8192, 3);
            q.write(8, data);
            assertArrayEquals(data, q.read(8, 8192));
            q.flush();
            try (Mapping m = Mapping.map(b.fd(), 0, b.mmapSize(), true, false)) {
                long r = m.address();
                assertEquals(1, UnsafeApi.getShort(r + 8), "version");
                assertEquals(128, UnsafeApi.getShort(r + 10), "desc_num");
                assertEquals(3, UnsafeApi.getShort(r + 14), "used_idx follows used.idx");
                long last = -1;
                for (int h = 0; h < 128; h++) {
                    assertEquals(0, UnsafeApi.getByte(r + 16 + 16L * h), "nothing in flight at rest");
                    last = Math.max(last, UnsafeApi.getLong(r + 16 + 16L * h + 8));
                }
                assertEquals(2, last, "three pops numbered 0, 1, 2 (a head may be reused)");
            }

            // A device restart: GET_VRING_BASE, then SET_INFLIGHT_FD again with the same buffer.
            int[] bases = qemu.stop(q);
            assertEquals(3, bases[0]);
            qemu.start(qemu.linuxFeatures(), false, bases, q);
            assertArrayEquals(data, q.read(8, 8192));
            assertTrue(rig.awaitLine(l -> l.contains("inflight recovery")).contains("resubmitting 0 request(s)"));
            assertEquals(1, rig.lines().stream().filter(l -> l.contains("inflight buffer:")).count(),
                    "the same buffer again is not mapped again");
            assertEquals(4, qemu.stop(q)[0]);

            // After a reset QEMU asks for a new buffer: it replaces the old one.
            Native.libc().close(qemu.inflight.fd());
            qemu.inflight = null;
            qemu.start(qemu.linuxFeatures(), false, new int[] {4}, q);
            assertArrayEquals(data, q.read(8, 8192));
            assertEquals(2, rig.lines().stream().filter(l -> l.contains("inflight buffer:")).count());
            assertEquals(5, qemu.stop(q)[0]);
        }
    }

    @Test
    void twoQueuesGetTwoRegions() throws Exception {
        try (ServerRig two = ServerRig.start(Files.createDirectory(dir.resolve("two")), 2);
             QemuFlow qemu = new QemuFlow(two.connect(), guest, 2)) {
            BlkQueue q0 = guest.queue(0, 64, true);
            BlkQueue q1 = guest.queue(1, 64, true);
            qemu.inflightQueueSize = 128;
            qemu.init(PROTOCOL, q0, q1);
            qemu.start(qemu.linuxFeatures(), true, null, q0, q1);
            assertEquals(2 * 2112, qemu.inflight.mmapSize());
            q0.write(0, BlkQueue.pattern(0, 512, 1));
            q1.write(1, BlkQueue.pattern(1, 512, 2));
            try (Mapping m = Mapping.map(qemu.inflight.fd(), 0, qemu.inflight.mmapSize(), true, false)) {
                assertEquals(1, UnsafeApi.getShort(m.address() + 14), "queue 0's used_idx");
                assertEquals(1, UnsafeApi.getShort(m.address() + 2112 + 14), "queue 1's used_idx, second region");
            }
        }
    }

    @Test
    void withoutTheFeatureNegotiatedGetIsAnsweredWithNoBuffer() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
            VhostUserFrontend.Inflight b = qemu.f.getInflightFd(1, 64);
            assertEquals(0, b.mmapSize());
            assertEquals(-1, b.fd());
            complained("without the INFLIGHT_SHMFD protocol feature negotiated");
            qemu.start(qemu.linuxFeatures(), true, null, q);
            q.write(0, new byte[512]);
        }
    }

    @Test
    void getForQueuesTheDeviceDoesNotHaveIsAnsweredWithNoBuffer() {
        try (QemuFlow qemu = qemuSession()) {
            qemu.init(PROTOCOL, guest.queue(0, 64, true));
            int[][] shapes = {{0, 128}, {2, 128}, {1, 0}, {1, 1025}, {0xffff, 0xffff}};
            for (int[] shape : shapes) {
                VhostUserFrontend.Inflight b = qemu.f.getInflightFd(shape[0], shape[1]);
                assertEquals(0, b.mmapSize(), "GET_INFLIGHT_FD " + shape[0] + " x " + shape[1]);
                assertEquals(-1, b.fd());
            }
            assertEquals(shapes.length, rig.complaints(sessions).size(), String.valueOf(rig.complaints(sessions)));
            VhostUserFrontend.Reply r = qemu.f.request(VhostUserFrontend.GET_INFLIGHT_FD, VhostUserFrontend.payload(20));
            assertEquals(0, r.payload().getLong(0), "a short payload gets no buffer either");
            complained("GET_INFLIGHT_FD payload is 20 bytes, expected 24");
        }
    }

    private static ByteBuffer inflight(long size, long offset, int queues, int queueSize) {
        return new VhostUserFrontend.Inflight(size, offset, queues, queueSize, -1).payload();
    }

    @Test
    void setWithABufferThatDoesNotFitIsRefused() {
        try (QemuFlow qemu = qemuSession()) {
            qemu.init(PROTOCOL, guest.queue(0, 64, true));
            VhostUserFrontend f = qemu.f;
            VhostUserFrontend.Inflight good = f.getInflightFd(1, 64);
            int fd = good.fd();
            long size = good.mmapSize();
            assertEquals(1088, size);
            int small = LogProtocolTest.sealedMemfd(512); // sealed: the size check is what refuses it
            int unsealed = Memfd.create("unsealed", size);
            int[] eventfd = {EventFd.create(true).fd()};
            try {
                Object[][] cases = {
                    {inflight(size + 64, 0, 1, 64), new int[] {fd}, "mmap_size 1152"},
                    {inflight(size - 64, 0, 1, 64), new int[] {fd}, "mmap_size 1024"},
                    {inflight(-1, 0, 1, 64), new int[] {fd}, "mmap_size 18446744073709551615"},
                    {inflight(size, 100, 1, 64), new int[] {fd}, "mmap_offset 100 is not a page-aligned"},
                    {inflight(size, 4096, 1, 64), new int[] {fd}, "runs past the end of its file"},
                    {inflight(size, 1L << 62, 1, 64), new int[] {fd}, "runs past the end of its file"},
                    {inflight(size, 0, 1, 64), new int[] {small}, "runs past the end of its file"},
                    {inflight(size, 0, 1, 64), eventfd, "not a regular file"},
                    {inflight(size, 0, 1, 64), new int[] {unsealed}, "not sealed against shrinking"},
                    {inflight(size, 0, 2, 64), new int[] {fd}, "for 2 queue(s)"},
                    {inflight(size, 0, 1, 2048), new int[] {fd}, "for queues of 2048"},
                    {inflight(size, 0, 1, 64), new int[0], "came with 0 descriptor(s), expected 1"},
                    {inflight(size, 0, 1, 64), new int[] {fd, fd}, "came with 2 descriptor(s), expected 1"},
                    {VhostUserFrontend.payload(16), new int[] {fd}, "payload is 16 bytes, expected 24"},
                };
                for (Object[] c : cases) {
                    long ack = f.acked(VhostUserFrontend.SET_INFLIGHT_FD, (ByteBuffer) c[0], (int[]) c[1]);
                    assertTrue(ack > 0, c[2] + ": answered " + ack);
                    String reason = (String) c[2];
                    complained(reason);
                }
                assertEquals(cases.length, rig.complaints(sessions).size());
                assertEquals(0, f.acked(VhostUserFrontend.SET_INFLIGHT_FD, inflight(size, 0, 1, 64), fd), "the right one");
            } finally {
                Native.libc().close(small);
                Native.libc().close(unsealed);
                Native.libc().close(eventfd[0]);
            }
        }
    }

    @Test
    void setWhileTheRingRunsIsRefusedAndTheRingRunsOn() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            long ack = qemu.f.acked(VhostUserFrontend.SET_INFLIGHT_FD, qemu.inflight.payload(), qemu.inflight.fd());
            assertTrue(ack > 0);
            complained("SET_INFLIGHT_FD while vring 0 runs");
            q.write(0, BlkQueue.pattern(0, 512, 9));
        }
    }

    /**
     * A region no backend could have written: the ring does not start, and QEMU (which asks for
     * no acknowledgement) loses the connection.
     */
    @Test
    void aRingWhoseRegionIsCorruptDoesNotStart() {
        QemuFlow qemu = qemuSession();
        BlkQueue q = guest.queue(0, 64, true);
        qemu.init(PROTOCOL, q);
        qemu.inflight = qemu.f.getInflightFd(1, 64);
        try (Mapping m = Mapping.map(qemu.inflight.fd(), 0, qemu.inflight.mmapSize(), false, false)) {
            UnsafeApi.putShort(m.address() + 8, (short) 7);
        }
        qemu.start(qemu.linuxFeatures(), true, null, q);
        assertTrue(qemu.f.closedByBackend());
        rig.awaitGone(sessions);
        List<String> complaints = rig.complaints(sessions);
        assertEquals(1, complaints.size(), String.valueOf(complaints));
        assertTrue(complaints.get(0).contains("inflight region refused: version 7"), complaints.get(0));
        qemu.close();
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }

    /**
     * A frontend that shrinks its guest memory file under the backend's mapping: recovery reads
     * the ring indices from the file (a load through the mapping would fault with SIGBUS), finds
     * them gone, and refuses the start; the server goes on.
     */
    @Test
    void guestMemoryCutShortUnderTheMappingIsRefusedNotFatal() {
        try (TestGuest shrinking = new TestGuest(); QemuFlow qemu = new QemuFlow(rig.connect(), shrinking, 1)) {
            sessions++;
            BlkQueue q = shrinking.queue(0, 64, true);
            qemu.init(PROTOCOL, q);
            VhostUserFrontend f = qemu.f;
            f.setFeatures(qemu.linuxFeatures());
            qemu.inflight = f.getInflightFd(1, 64);
            f.setInflightFd(qemu.inflight);
            qemu.sendMemory(shrinking.regions());
            f.setVringNum(0, 64);
            f.setVringBase(0, 0);
            f.setVringAddr(0, q.descUser(), q.usedUser(), q.availUser());
            f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, q.kick);
            assertEquals(0, Native.libc().ftruncate(shrinking.fd, 0));
            f.setVringEnable(0, true);
            assertTrue(f.closedByBackend());
            rig.awaitGone(sessions);
            List<String> complaints = rig.complaints(sessions);
            assertEquals(1, complaints.size(), String.valueOf(complaints));
            assertTrue(complaints.get(0).contains("cannot be read from the memory file"), complaints.get(0));
        }
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }

    @Test
    void aDeviceResetDropsTheBuffer() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            q.write(0, BlkQueue.pattern(0, 512, 4));
            qemu.f.post(VhostUserFrontend.RESET_DEVICE, null);
            // A new driver: new rings, from index 0, and no SET_INFLIGHT_FD yet.
            BlkQueue fresh = guest.queue(0, 64, true, 5);
            qemu.protocol &= ~VhostUserFrontend.PF_INFLIGHT_SHMFD;
            qemu.start(qemu.linuxFeatures(), false, null, fresh);
            assertArrayEquals(BlkQueue.pattern(0, 512, 4), fresh.read(0, 512));
            // The session logs the start after the queue runs: the read can win the race.
            List<String> starts = rig.lines().stream().filter(l -> l.contains("queue 0 started")).toList();
            // Up to 30 s (a hang guard), pausing between looks: a spinning test thread takes the CPU
            // the session's thread needs to log on a loaded 2-core machine.
            for (long end = System.nanoTime() + 30_000_000_000L; starts.size() < 2 && System.nanoTime() < end; ) {
                java.util.concurrent.locks.LockSupport.parkNanos(1_000_000L);
                starts = rig.lines().stream().filter(l -> l.contains("queue 0 started")).toList();
            }
            assertEquals(2, starts.size(), String.valueOf(starts));
            assertTrue(starts.get(0).contains("inflight tracked"), starts.get(0));
            assertTrue(!starts.get(1).contains("inflight tracked"), "after the reset: " + starts.get(1));
        }
    }
}
