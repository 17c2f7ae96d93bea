package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.EventFd;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.RingTamperer;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * The backend against a frontend that speaks as QEMU 7.2 does: real socket, memfd guest memory
 * in two regions of one file, real eventfds, a split-ring driver in guest memory, a real image.
 */
class VhostUserProtocolTest {
    static final long ALL_PROTOCOL = QemuFlow.ALL_PROTOCOL;

    @TempDir
    Path dir;

    private static long capacity(byte[] config) {
        return ByteBuffer.wrap(config).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
    }

    private byte[] imageBytes(long offset, int length) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(dir.resolve("disk.img").toFile(), "r")) {
            byte[] b = new byte[length];
            f.seek(offset);
            f.readFully(b);
            return b;
        }
    }

    @Test
    void qemuSequenceServesIoFromTwoRegionsOfOneMemfd() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            byte[] config = qemu.init(ALL_PROTOCOL, q);
            assertEquals(ALL_PROTOCOL, qemu.protocol, "MQ, REPLY_ACK, CONFIG and CONFIGURE_MEM_SLOTS offered");
            assertEquals(ServerRig.IMAGE_BYTES / 512, capacity(config));
            qemu.start(qemu.linuxFeatures(), true, null, q);

            byte[] data = BlkQueue.pattern(8, 8192, 1);
            q.write(8, data);
            assertArrayEquals(data, q.read(8, 8192));
            q.flush();
            assertEquals(ServerRig.SERIAL, q.id());
            assertArrayEquals(data, imageBytes(8 * 512, 8192), "the write reached the image file");

            int[] bases = qemu.stop(q);
            assertEquals(4, bases[0], "GET_VRING_BASE answers the next available index");
            assertEquals(4, q.driver.usedIdx());
        }
    }

    @Test
    void setMemTablePathWithOnlyTheConfigProtocolFeature() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 256, true);
            qemu.init(VhostUserFrontend.PF_CONFIG, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            byte[] data = BlkQueue.pattern(64, 4096, 2);
            q.write(64, data);
            assertArrayEquals(data, q.read(64, 4096));
            assertEquals(2, qemu.stop(q)[0]);
        }
    }

    @Test
    void seabiosStartsTheDeviceThenLinuxRestartsItWithNewFeaturesAndRings() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue bios = g.queue(0, 128, false, 0);
            qemu.init(ALL_PROTOCOL, bios);
            qemu.start(qemu.legacyFeatures(), true, null, bios);
            assertEquals(0, bios.roundTrip(BlkQueue.T_IN, 0, bios.dataGpa, 512, true), "the firmware reads the boot sector");
            assertEquals(1, qemu.stop(bios)[0]);

            // Linux: a new driver with its own rings elsewhere, EVENT_IDX, a new call eventfd;
            // QEMU resends no unchanged memory region over ADD_MEM_REG.
            BlkQueue linux = g.queue(0, 256, true, 1);
            qemu.start(qemu.linuxFeatures(), false, null, linux);
            byte[] data = BlkQueue.pattern(2048, 4096, 3);
            linux.write(2048, data);
            assertArrayEquals(data, linux.read(2048, 4096));
            assertEquals(2, qemu.stop(linux)[0]);
        }
    }

    @Test
    void repeatedSetFeaturesAndAReplacedCallFdWhileRunning() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            q.write(1, BlkQueue.pattern(1, 512, 4));
            for (int i = 0; i < 3; i++) {
                qemu.f.setFeatures(qemu.linuxFeatures());
            }
            assertArrayEquals(BlkQueue.pattern(1, 512, 4), q.read(1, 512), "the ring resumed after SET_FEATURES");

            try (EventFd old = q.call) {
                EventFd replacement = EventFd.create(true);
                qemu.f.ackEverything(true);
                qemu.f.setVringFd(VhostUserFrontend.SET_VRING_CALL, 0, replacement);
                q.call = replacement;
                old.read();
                q.driver.enableInterrupts();
                int head = q.add(BlkQueue.T_IN, 1, q.dataGpa, 512, true);
                q.publish();
                assertEquals(1, replacement.await(10_000), "the new call eventfd is signalled");
                assertEquals(head, q.awaitUsed());
                assertEquals(0, old.await(0), "the replaced call eventfd is not");
            }
        }
    }

    @Test
    void getVringBaseDrainsRequestsInFlightAndTheRingResumesWhereItStopped() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 256, true);
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            int requests = 80;
            Set<Integer> heads = new HashSet<>();
            for (int i = 0; i < requests; i++) {
                heads.add(q.add(BlkQueue.T_IN, 8L * i, q.dataGpa + 512L * (i % 64), 512, true));
            }
            q.publish();
            int base = qemu.stop(q)[0];
            assertTrue(base <= requests, "base " + base);
            assertEquals(base, q.driver.usedIdx(), "everything popped was completed before the answer");

            qemu.start(qemu.linuxFeatures(), false, new int[] {base}, q);
            for (int i = 0; i < requests; i++) {
                assertTrue(heads.remove(q.awaitUsed()));
            }
            for (int i = 0; i < requests; i++) {
                assertEquals(0, q.status(i));
            }
            assertEquals(requests, qemu.stop(q)[0]);
        }
    }

    @Test
    void aNewFrontendResumesWithSetVringBaseAndReadsWhatTheFirstWrote() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest()) {
            BlkQueue q = g.queue(0, 128, true);
            byte[] data = BlkQueue.pattern(100, 4096, 5);
            int[] bases;
            try (QemuFlow first = new QemuFlow(rig.connect(), g, 1)) {
                first.init(ALL_PROTOCOL, q);
                first.start(first.linuxFeatures(), true, null, q);
                q.write(100, data);
                bases = first.stop(q);
            }
            rig.awaitGone(1);
            try (QemuFlow second = new QemuFlow(rig.connect(), g, 1)) {
                second.init(ALL_PROTOCOL, q);
                second.start(second.linuxFeatures(), true, bases, q);
                assertArrayEquals(data, q.read(100, 4096));
                assertEquals(bases[0] + 1, second.stop(q)[0]);
            }
        }
    }

    @Test
    void aFrontendThatDiesMidIoIsFollowedByOneThatRewindsToUsedIdx() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest()) {
            BlkQueue q = g.queue(0, 256, true);
            int requests = 64;
            try (QemuFlow first = new QemuFlow(rig.connect(), g, 1)) {
                first.init(ALL_PROTOCOL, q);
                first.start(first.linuxFeatures(), true, null, q);
                byte[] block = BlkQueue.pattern(7, 512, 6);
                org.agrona.UnsafeApi.copyMemory(block, org.agrona.UnsafeApi.arrayBaseOffset(byte[].class), null,
                        q.host(q.dataGpa), 512);
                for (int i = 0; i < requests; i++) {
                    q.add(BlkQueue.T_OUT, 7 + 8L * i, q.dataGpa, 512, false);
                }
                q.publish();
            } // the socket closes with requests in flight, without GET_VRING_BASE
            rig.awaitGone(1);
            // QEMU's GET_VRING_BASE failed, so it rewinds to used.idx and offers the rest again.
            int usedIdx = q.driver.usedIdx();
            try (QemuFlow second = new QemuFlow(rig.connect(), g, 1)) {
                second.init(ALL_PROTOCOL, q);
                second.start(second.linuxFeatures(), true, new int[] {usedIdx}, q);
                for (int i = 0; i < requests; i++) {
                    q.awaitUsed();
                }
                for (int i = 0; i < requests; i++) {
                    assertEquals(0, q.status(i), "request " + i);
                }
                assertArrayEquals(BlkQueue.pattern(7, 512, 6), q.read(7 + 8L * (requests - 1), 512));
                assertEquals(requests + 1, second.stop(q)[0]);
            }
        }
    }

    @Test
    void memoryRegionsAddedAndRemovedWhileTheRingRuns() throws Exception {
        int extraFd = Memfd.create("extra", 1 << 20);
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 256, true);
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            q.write(16, BlkQueue.pattern(16, 4096, 7));

            // Hot-plugged memory arrives while requests are in flight.
            VhostUserFrontend.Region extra = new VhostUserFrontend.Region(8L << 30, 1 << 20, 0x7000_0000_0000L, 0);
            int requests = 64;
            for (int i = 0; i < requests; i++) {
                q.add(BlkQueue.T_IN, 16, q.dataGpa, 4096, true);
            }
            q.publish();
            assertEquals(0, qemu.f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(extra), extraFd));
            for (int i = 0; i < requests; i++) {
                q.awaitUsed();
            }
            assertArrayEquals(BlkQueue.pattern(16, 4096, 7), q.read(16, 4096));
            assertEquals(0, qemu.f.acked(VhostUserFrontend.REM_MEM_REG, VhostUserFrontend.singleRegion(extra)));

            // The low region (the data buffers) goes and comes back; the rings live in the high one.
            VhostUserFrontend.Region low = g.regions()[0];
            assertEquals(0, qemu.f.acked(VhostUserFrontend.REM_MEM_REG, VhostUserFrontend.singleRegion(low)));
            assertEquals(0, qemu.f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(low), g.fd));
            assertArrayEquals(BlkQueue.pattern(16, 4096, 7), q.read(16, 4096));

            // A whole new table (the SET_MEM_TABLE path) while the ring runs.
            assertEquals(0, qemu.f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(g.regions()), g.fd, g.fd));
            assertArrayEquals(BlkQueue.pattern(16, 4096, 7), q.read(16, 4096));
        } finally {
            Native.libc().close(extraFd);
        }
    }

    @Test
    void twoQueuesServeOneDisk() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 2); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 2)) {
            BlkQueue q0 = g.queue(0, 128, true);
            BlkQueue q1 = g.queue(1, 128, true);
            qemu.init(ALL_PROTOCOL, q0, q1);
            qemu.start(qemu.linuxFeatures(), true, null, q0, q1);
            byte[] data = BlkQueue.pattern(300, 4096, 8);
            q0.write(300, data);
            assertArrayEquals(data, q1.read(300, 4096));
            assertArrayEquals(new int[] {1, 1}, qemu.stop(q0, q1));
        }
    }

    @Test
    void aRingWithoutKickFdIsPolled() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            q.polled = true;
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            for (int i = 0; i < 5; i++) {
                assertArrayEquals(new byte[512], q.read(i, 512));
            }
        }
    }

    @Test
    void configSpaceEchoesTheAskedSizeAndRefusesWrites() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); VhostUserFrontend f = rig.connect()) {
            f.setProtocolFeatures(ALL_PROTOCOL);
            f.setOwner();
            byte[] full = f.getConfig(0, 60);
            assertEquals(ServerRig.IMAGE_BYTES / 512, capacity(full));
            assertArrayEquals(java.util.Arrays.copyOf(full, 57), f.getConfig(0, 57));
            assertArrayEquals(java.util.Arrays.copyOfRange(full, 20, 28), f.getConfig(20, 8));
            assertArrayEquals(new byte[16], java.util.Arrays.copyOfRange(f.getConfig(0, 76), 60, 76),
                    "bytes past the device's config read as zero");
            assertNull(f.getConfig(0, 300), "more than 256 bytes: an empty answer, which QEMU takes as failure");

            assertEquals(0, f.acked(VhostUserFrontend.SET_CONFIG, VhostUserFrontend.config(32, 1, new byte[] {full[32]})),
                    "writing the value already there is harmless");
            assertNotEquals(0, f.acked(VhostUserFrontend.SET_CONFIG, VhostUserFrontend.config(0, 8, new byte[8])),
                    "capacity is read-only");
            assertEquals(ServerRig.IMAGE_BYTES / 512, capacity(f.getConfig(0, 60)));
        }
    }

    @Test
    void aSecondFrontendWaitsUntilTheFirstLeaves() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest()) {
            VhostUserFrontend first = rig.connect();
            first.setOwner();
            assertNotEquals(0, first.getFeatures());
            try (VhostUserFrontend second = rig.connect()) {
                second.send(VhostUserFrontend.GET_FEATURES, VhostUserFrontend.VERSION, null);
                Thread.sleep(200);
                first.close();
                assertNotEquals(0, second.receive().u64(), "answered once the first frontend left");
            }
            rig.awaitGone(2);
            assertGoodFrontendDoesIo(rig, g);
        }
    }

    @Test
    void resetDeviceStopsTheRingsAndTheDeviceCanBeSetUpAgain() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            q.write(5, BlkQueue.pattern(5, 512, 9));
            assertEquals(0, qemu.f.acked(VhostUserFrontend.RESET_DEVICE, null));
            assertEquals(0, qemu.f.getVringBase(0), "the reset forgot the ring");
            assertEquals(1, q.driver.usedIdx());

            q.driver.initialise();
            qemu.start(qemu.linuxFeatures(), false, null, q);
            assertArrayEquals(BlkQueue.pattern(5, 512, 9), q.read(5, 512));
        }
    }

    @Test
    void aReadOnlyDiskOffersRoAndRefusesWrites() throws Exception {
        try (ServerRig rig = ServerRig.startReadOnly(dir); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(ALL_PROTOCOL, q);
            assertTrue((qemu.offered & (1L << 5)) != 0, "VIRTIO_BLK_F_RO offered");
            qemu.start(qemu.linuxFeatures(), true, null, q);
            assertEquals(1, q.roundTrip(BlkQueue.T_OUT, 0, q.dataGpa, 512, false), "a write fails with IOERR");
            assertArrayEquals(new byte[512], q.read(0, 512));
        }
    }

    @Test
    void aCorruptRingIsReportedOnTheErrorEventfdAndTheRingCanBeRestarted() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            RingTamperer.of(q.driver).offerRaw(1000); // a head beyond the queue size
            q.publish();
            assertEquals(1, qemu.errs[0].await(10_000), "SET_VRING_ERR's eventfd signalled");
            rig.awaitLine(l -> l.startsWith("queue 0 quarantined"));
            qemu.stop(q);

            BlkQueue fresh = g.queue(0, 128, true, 2);
            qemu.start(qemu.linuxFeatures(), false, null, fresh);
            assertArrayEquals(new byte[512], fresh.read(3, 512));
        }
    }

    /** A well-behaved frontend connects and does I/O: the server survived whatever came before. */
    static void assertGoodFrontendDoesIo(ServerRig rig, TestGuest g) {
        try (QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
            BlkQueue q = g.queue(0, 64, true, 15);
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            byte[] data = BlkQueue.pattern(40, 1024, 10);
            q.write(40, data);
            assertArrayEquals(data, q.read(40, 1024));
            assertEquals(2, qemu.stop(q)[0]);
        }
    }
}
