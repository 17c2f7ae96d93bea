package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.Test;

import io.vblk.sys.EventFd;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Frontends that break the protocol. Each case checks what the frontend sees (a failure answer,
 * or the connection closed where it cannot be told), that the server logged exactly one line
 * about it, and that a good frontend then does I/O on the same server.
 */
class BadFrontendTest extends OneServerCase {
    static final long ALL_PROTOCOL = VhostUserProtocolTest.ALL_PROTOCOL;

    /** A connection as far as SET_OWNER, with REPLY_ACK negotiated. */
    private VhostUserFrontend owned() {
        VhostUserFrontend f = newSession();
        f.setProtocolFeatures(ALL_PROTOCOL);
        f.setOwner();
        return f;
    }

    /** A connection with memory and a running ring, the state QEMU leaves after DRIVER_OK. */
    private QemuFlow running() {
        QemuFlow qemu = qemuSession();
        BlkQueue q = guest.queue(0, 128, true, 3);
        qemu.init(ALL_PROTOCOL, q);
        qemu.start(qemu.linuxFeatures(), true, null, q);
        q.read(0, 512);
        return qemu;
    }

    private void refused(VhostUserFrontend f, int request, ByteBuffer payload, int... fds) {
        long ack = f.acked(request, payload, fds);
        assertTrue(ack > 0, "request " + request + " answered " + ack + " (-1: connection closed)");
    }

    /** The frontend is closed; the server said one thing about it and serves the next frontend. */
    private void thenGood(VhostUserFrontend f) {
        f.close();
        rig.awaitGone(sessions);
        List<String> complaints = rig.complaints(sessions);
        assertEquals(1, complaints.size(), "one line about the bad frontend: " + complaints);
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
        sessions++;
        assertTrue(rig.serving());
    }

    // ---------------------------------------------------------------- broken framing: the connection ends

    @Test
    void aHeaderOfAnotherVersionClosesTheConnection() {
        VhostUserFrontend f = newSession();
        f.send(VhostUserFrontend.GET_FEATURES, 0x2, null);
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void aReplyFlagFromTheFrontendClosesTheConnection() {
        VhostUserFrontend f = newSession();
        f.send(VhostUserFrontend.GET_FEATURES, VhostUserFrontend.VERSION | VhostUserFrontend.REPLY, null);
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void unknownFlagBitsCloseTheConnection() {
        VhostUserFrontend f = newSession();
        f.send(VhostUserFrontend.GET_FEATURES, VhostUserFrontend.VERSION | 0x100, null);
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void aPayloadLargerThanAnyRequestClosesTheConnection() {
        VhostUserFrontend f = newSession();
        ByteBuffer header = VhostUserFrontend.payload(12).putInt(0, VhostUserFrontend.SET_FEATURES).putInt(4, 1).putInt(8, 0x10_0000);
        f.sendBytes(header.array());
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void aMessageCutShortByAHangUp() {
        VhostUserFrontend f = newSession();
        ByteBuffer partial = VhostUserFrontend.payload(16).putInt(0, VhostUserFrontend.SET_FEATURES).putInt(4, 1).putInt(8, 8);
        f.sendBytes(partial.array());
        thenGood(f);
    }

    // ---------------------------------------------------------------- sizes

    @Test
    void aSizeThatDoesNotMatchIsRefusedAndTheConnectionGoesOn() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_FEATURES, VhostUserFrontend.payload(4));
        f.getFeatures();
        thenGood(f);
    }

    @Test
    void aSizeThatDoesNotMatchWithoutNeedReplyClosesTheConnection() {
        VhostUserFrontend f = owned();
        f.send(VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.VERSION, VhostUserFrontend.payload(12).putInt(4, 64));
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void aGetRequestWithAPayloadClosesTheConnection() {
        VhostUserFrontend f = owned();
        f.send(VhostUserFrontend.GET_FEATURES, VhostUserFrontend.VERSION, VhostUserFrontend.u64(0));
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void aConfigRequestLargerThanTheConfigSpaceGetsAnEmptyAnswer() {
        VhostUserFrontend f = owned();
        assertEquals(null, f.getConfig(250, 16));
        thenGood(f);
    }

    // ---------------------------------------------------------------- unknown requests

    @Test
    void anUnknownRequestIsRefused() {
        VhostUserFrontend f = owned();
        refused(f, 99, VhostUserFrontend.u64(1));
        thenGood(f);
    }

    @Test
    void anUnsupportedRequestWithoutNeedReplyClosesTheConnection() {
        VhostUserFrontend f = owned();
        f.send(6 /* SET_LOG_BASE */, VhostUserFrontend.VERSION, VhostUserFrontend.payload(16));
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void requestZeroAndTheLargestRequestNumberCloseTheConnection() {
        VhostUserFrontend f = newSession();
        f.send(0, VhostUserFrontend.VERSION, null);
        assertTrue(f.closedByBackend());
        thenGood(f);
        VhostUserFrontend g = newSession();
        g.send(-1, VhostUserFrontend.VERSION, null);
        assertTrue(g.closedByBackend());
        thenGood(g);
    }

    // ---------------------------------------------------------------- out of order

    @Test
    void memoryBeforeSetOwnerIsRefused() {
        VhostUserFrontend f = newSession();
        f.setProtocolFeatures(ALL_PROTOCOL);
        refused(f, VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd, guest.fd);
        thenGood(f);
    }

    @Test
    void ringAddressesBeforeAnyMemoryAreRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_VRING_ADDR, VhostUserFrontend.addr(0, 0x1000, 0x3000, 0x2000));
        thenGood(f);
    }

    @Test
    void aSecondSetOwnerIsRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_OWNER, null);
        thenGood(f);
    }

    @Test
    void changingTheRingSizeWhileItRunsIsRefusedAndTheRingKeepsRunning() {
        QemuFlow qemu = running();
        refused(qemu.f, VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.state(0, 64));
        refused(qemu.f, VhostUserFrontend.SET_VRING_BASE, VhostUserFrontend.state(0, 7));
        rig.awaitLine(l -> l.contains("SET_VRING_BASE refused"));
        assertEquals(2, rig.complaints(sessions).size());
        qemu.close();
        rig.awaitGone(sessions);
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }

    @Test
    void featuresThatWereNotOfferedAreRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_FEATURES, VhostUserFrontend.u64(1L << 34));
        thenGood(f);
        VhostUserFrontend g = owned();
        refused(g, VhostUserFrontend.SET_PROTOCOL_FEATURES, VhostUserFrontend.u64(ALL_PROTOCOL | 1L << 14)); // INBAND_NOTIFICATIONS
        thenGood(g);
    }

    // ---------------------------------------------------------------- descriptors

    @Test
    void aKickWithoutItsDescriptorIsRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_VRING_KICK, VhostUserFrontend.u64(0));
        thenGood(f);
    }

    @Test
    void aDescriptorWithTheNoFdFlagIsRefused() {
        try (EventFd e = EventFd.create(true)) {
            VhostUserFrontend f = owned();
            refused(f, VhostUserFrontend.SET_VRING_CALL, VhostUserFrontend.u64(VhostUserFrontend.NOFD), e.fd());
            thenGood(f);
        }
    }

    @Test
    void aDescriptorWhereNoneBelongsIsRefused() {
        try (EventFd e = EventFd.create(true)) {
            VhostUserFrontend f = owned();
            refused(f, VhostUserFrontend.SET_FEATURES, VhostUserFrontend.u64(0), e.fd());
            thenGood(f);
        }
    }

    @Test
    void aMemoryTableWithFewerDescriptorsThanRegionsIsRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd);
        thenGood(f);
    }

    @Test
    void aKickThatIsNotAnEventfdIsRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_VRING_KICK, VhostUserFrontend.u64(0), guest.fd);
        thenGood(f);
    }

    @Test
    void aMemoryDescriptorThatIsNotAFileIsRefused() {
        try (EventFd e = EventFd.create(true)) {
            VhostUserFrontend f = owned();
            refused(f, VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(guest.regions()[0]), e.fd());
            thenGood(f);
        }
    }

    // ---------------------------------------------------------------- regions

    @Test
    void moreRegionsThanOneMemoryTableHoldsAreRefused() {
        // With CONFIGURE_MEM_SLOTS one table holds the 32 slots offered (Cloud Hypervisor sends
        // its whole table at once); 33 regions (and 32 descriptors, the most a message carries) are refused.
        VhostUserFrontend f = owned();
        int n = FrontendState.MAX_MEM_SLOTS + 1;
        VhostUserFrontend.Region[] regions = new VhostUserFrontend.Region[n];
        int[] fds = new int[n - 1];
        for (int i = 0; i < n; i++) {
            regions[i] = new VhostUserFrontend.Region(i * (1L << 20), 1L << 20, 0x7f00_0000_0000L + i * (1L << 20), i * (1L << 20) % (8L << 20));
        }
        java.util.Arrays.fill(fds, guest.fd);
        refused(f, VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(regions), fds);
        thenGood(f);
    }

    @Test
    void moreRegionsThanMemorySlotsAreRefused() {
        int fd = Memfd.create("slots", 1L << 20);
        try {
            VhostUserFrontend f = owned();
            long slots = f.getU64(VhostUserFrontend.GET_MAX_MEM_SLOTS);
            for (long i = 0; i < slots; i++) {
                VhostUserFrontend.Region r = new VhostUserFrontend.Region(i << 20, 1L << 20, 0x7f00_0000_0000L + (i << 20), 0);
                assertEquals(0, f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), fd));
            }
            VhostUserFrontend.Region extra = new VhostUserFrontend.Region(slots << 20, 1L << 20, 0x7f00_0000_0000L + (slots << 20), 0);
            refused(f, VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(extra), fd);
            thenGood(f);
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aRegionRunningPastTheEndOfItsFileIsRefused() {
        VhostUserFrontend f = owned();
        VhostUserFrontend.Region tooLong = new VhostUserFrontend.Region(0, 16L << 20, 0x7f00_0000_0000L, 0);
        refused(f, VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(tooLong), guest.fd);
        VhostUserFrontend.Region pastEnd = new VhostUserFrontend.Region(0, 4L << 20, 0x7f00_0000_0000L, 6L << 20);
        refused(f, VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(pastEnd), guest.fd);
        VhostUserFrontend.Region negativeOffset = new VhostUserFrontend.Region(0, 4L << 20, 0x7f00_0000_0000L, -4096);
        refused(f, VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(negativeOffset), guest.fd);
        VhostUserFrontend.Region empty = new VhostUserFrontend.Region(0, 0, 0x7f00_0000_0000L, 0);
        refused(f, VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(empty), guest.fd);
        f.close();
        rig.awaitGone(sessions);
        assertEquals(4, rig.complaints(sessions).size());
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }

    @Test
    void overlappingRegionsAreRefused() {
        VhostUserFrontend f = owned();
        VhostUserFrontend.Region a = new VhostUserFrontend.Region(0, 4L << 20, 0x7f00_0000_0000L, 0);
        VhostUserFrontend.Region b = new VhostUserFrontend.Region(2L << 20, 4L << 20, 0x7f10_0000_0000L, 0);
        refused(f, VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(a, b), guest.fd, guest.fd);
        thenGood(f);
    }

    @Test
    void removingARegionThatIsNotThereIsRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.REM_MEM_REG, VhostUserFrontend.singleRegion(guest.regions()[0]));
        thenGood(f);
    }

    // ---------------------------------------------------------------- rings

    @Test
    void aRingOutsideGuestMemoryIsRefused() {
        VhostUserFrontend f = owned();
        assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd, guest.fd));
        f.ackEverything(true);
        f.setVringNum(0, 256);
        refused(f, VhostUserFrontend.SET_VRING_ADDR, VhostUserFrontend.addr(0, 0x1000, 0x3000, 0x2000));
        thenGood(f);
    }

    @Test
    void aRingRunningPastTheEndOfItsRegionIsRefused() {
        VhostUserFrontend f = owned();
        assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd, guest.fd));
        f.ackEverything(true);
        f.setVringNum(0, 256);
        long lastPage = guest.user(TestGuest.HIGH_GPA + TestGuest.REGION_BYTES - 4096);
        refused(f, VhostUserFrontend.SET_VRING_ADDR, VhostUserFrontend.addr(0, lastPage + 2048, lastPage - 8192, lastPage - 16384));
        thenGood(f);
    }

    @Test
    void aMisalignedRingIsRefusedWhenItWouldStart() {
        VhostUserFrontend f = owned();
        f.ackEverything(true);
        try (EventFd kick = EventFd.create(true)) {
            f.setFeatures(f.getFeatures());
            assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd, guest.fd));
            long base = guest.user(TestGuest.HIGH_GPA);
            f.setVringNum(0, 64);
            f.setVringAddr(0, base + 8, base + 8192, base + 4096);
            f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, kick);
            refused(f, VhostUserFrontend.SET_VRING_ENABLE, VhostUserFrontend.state(0, 1));
            thenGood(f);
        }
    }

    @Test
    void aQueueIndexBeyondTheDeviceIsRefused() {
        try (EventFd e = EventFd.create(true)) {
            VhostUserFrontend f = owned();
            refused(f, VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.state(5, 64));
            refused(f, VhostUserFrontend.SET_VRING_CALL, VhostUserFrontend.u64(200), e.fd());
            refused(f, VhostUserFrontend.SET_VRING_KICK, VhostUserFrontend.u64(0x1_0000_0000L), e.fd());
            f.close();
            rig.awaitGone(sessions);
            assertEquals(3, rig.complaints(sessions).size());
            VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
        }
    }

    @Test
    void getVringBaseOfAQueueThatDoesNotExistClosesTheConnection() {
        VhostUserFrontend f = owned();
        f.send(VhostUserFrontend.GET_VRING_BASE, VhostUserFrontend.VERSION, VhostUserFrontend.state(9, 0));
        assertTrue(f.closedByBackend());
        thenGood(f);
    }

    @Test
    void ringSizesThatAreNotPowersOfTwoOrTooLargeAreRefused() {
        VhostUserFrontend f = owned();
        refused(f, VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.state(0, 100));
        refused(f, VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.state(0, 2048));
        refused(f, VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.state(0, 0));
        refused(f, VhostUserFrontend.SET_VRING_BASE, VhostUserFrontend.state(0, 0x10000));
        refused(f, VhostUserFrontend.SET_VRING_ENABLE, VhostUserFrontend.state(0, 2));
        f.close();
        rig.awaitGone(sessions);
        assertEquals(5, rig.complaints(sessions).size());
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }

    // ---------------------------------------------------------------- anything at all

    /**
     * Random requests (any code up to 45, random flags, payloads and sizes, sometimes an eventfd
     * or the memfd attached) over many connections, a few of them with memory and a running
     * ring: the server must still serve a good frontend afterwards.
     */
    @Test
    void randomRequestsNeverStopTheServer() {
        long seed = 20251125L;
        Random random = new Random(seed);
        try (EventFd e = EventFd.create(true)) {
            for (int connection = 0; connection < 24; connection++) {
                QemuFlow qemu = connection % 4 == 0 ? running() : null;
                VhostUserFrontend f = qemu != null ? qemu.f : owned();
                for (int i = 0; i < 25; i++) {
                    int request = random.nextInt(46);
                    int flags = random.nextInt(8) == 0 ? random.nextInt(16) : VhostUserFrontend.VERSION
                            | (random.nextBoolean() ? VhostUserFrontend.NEED_REPLY : 0);
                    int size = random.nextInt(4) == 0 ? random.nextInt(300) : new int[] {0, 8, 12, 40, 72}[random.nextInt(5)];
                    ByteBuffer payload = VhostUserFrontend.payload(size);
                    for (int b = 0; b < size; b++) {
                        payload.put(b, (byte) (random.nextInt(4) == 0 ? random.nextInt(256) : random.nextInt(3)));
                    }
                    int pick = random.nextInt(6);
                    int[] fds = pick == 0 ? new int[] {e.fd()} : pick == 1 ? new int[] {guest.fd} : new int[0];
                    try {
                        f.send(request, flags, payload, fds);
                    } catch (IllegalStateException closed) {
                        break;
                    }
                }
                if (qemu != null) {
                    qemu.close();
                } else {
                    f.close();
                }
                rig.awaitGone(sessions);
            }
        }
        assertTrue(rig.serving(), "seed " + seed);
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }
}
