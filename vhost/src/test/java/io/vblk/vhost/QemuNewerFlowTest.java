package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.VhostUserFrontend;

/**
 * What QEMU releases after 7.2 send a vhost-user-blk backend, replayed (only 7.2 runs here). Read
 * from source: qemu/qemu {@code hw/virtio/vhost-user.c} at 019fbfa4bcd2d3a835c241295e22ab2b5b56129b
 * (a 10.x-era tree: {@code vhost_user_backend_init}, {@code vhost_user_write_sync},
 * {@code vhost_user_set_vring_enable}, {@code vhost_user_set_features},
 * {@code vhost_user_set_log_base}, {@code vhost_user_get_config}), {@code hw/block/vhost-user-blk.c}
 * (stored version 06bb74985f42, 7.2-era: realize/connect/start/stop), and these commits as posted
 * to qemu-devel:
 * <ul>
 * <li>"vhost: Re-enable vrings after setting features" (Hanna Czenczek, 2023, QEMU 8.1):
 * {@code vhost_dev_set_features} sends SET_VRING_ENABLE 1 for every ring after each SET_FEATURES
 * on a started device, so a migration's SET_FEATURES | LOG_ALL (and its clearing) is followed by
 * enables of rings that run;</li>
 * <li>"vhost-user: call VHOST_USER_SET_VRING_ENABLE synchronously" and the
 * {@code vhost_user_write_sync}/{@code enforce_reply} series (Laszlo Ersek, 2023, QEMU 8.2):
 * SET_VRING_ENABLE waits for a reply, with REPLY_ACK an acknowledgement, without it a
 * GET_FEATURES sent as a barrier;</li>
 * <li>protocol features after 7.2: STATUS (16, SET/GET_STATUS), XEN_MMAP (17), SHARED_OBJECT
 * (18), DEVICE_STATE (19, SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE): QEMU keeps
 * {@code offered & VHOST_USER_PROTOCOL_FEATURE_MASK} and sends their messages only when
 * negotiated. vblk offers none of them, so a newer QEMU must work without.</li>
 * </ul>
 */
class QemuNewerFlowTest extends OneServerCase {
    static final long PF_STATUS = 1L << 16;
    static final long PF_XEN_MMAP = 1L << 17;
    static final long PF_SHARED_OBJECT = 1L << 18;
    static final long PF_DEVICE_STATE = 1L << 19;
    static final long NEWER = PF_STATUS | PF_XEN_MMAP | PF_SHARED_OBJECT | PF_DEVICE_STATE;
    static final long PF_LOG_SHMFD = 1L << 1;
    static final long LOG_ALL = 1L << 26;
    static final int SET_LOG_BASE = 6;

    @Test
    void newerProtocolFeaturesAreNotOfferedAndQemuWorksWithout() {
        try (QemuFlow qemu = qemuSession()) {
            qemu.f.ackEverything(true);
            BlkQueue q = guest.queue(0, 128, true);
            qemu.init(CrashRecoveryTest.PROTOCOL | PF_LOG_SHMFD | NEWER, q);
            assertEquals(0, qemu.protocol & NEWER, "STATUS, XEN_MMAP, SHARED_OBJECT, DEVICE_STATE not offered");
            qemu.start(qemu.linuxFeatures() & ~LOG_ALL, true, null, q);
            byte[] data = BlkQueue.pattern(40, 8192, 21);
            q.write(40, data);
            assertArrayEquals(data, q.read(40, 8192));
            q.flush();
            assertEquals(3, qemu.stop(q)[0]);
        }
        assertEquals(0, rig.complaints(sessions).size(), String.valueOf(rig.complaints(sessions)));
    }

    private static boolean dirty(Mapping log, long gpa) {
        long page = gpa >>> 12;
        return (new UnsafeBuffer(log.address(), (int) log.length()).getByte((int) (page >>> 3)) & (1 << (page & 7))) != 0;
    }

    /**
     * QEMU 8.1+ migration: SET_LOG_BASE, SET_FEATURES | LOG_ALL then SET_VRING_ENABLE 1 of the
     * running ring, SET_VRING_ADDR with VHOST_VRING_F_LOG; cancelled: SET_FEATURES without LOG_ALL
     * and SET_VRING_ENABLE 1 again. Every SET acknowledged (8.2+); the ring runs throughout, its
     * writes logged while LOG_ALL is on, and stops where the driver is.
     */
    @Test
    void reEnableAfterSetFeaturesKeepsTheRingRunningAndLogged() {
        int[] fd = {-1};
        try (QemuFlow qemu = qemuSession()) {
            qemu.f.ackEverything(true);
            BlkQueue q = guest.queue(0, 128, true);
            qemu.init(CrashRecoveryTest.PROTOCOL | PF_LOG_SHMFD, q);
            long features = qemu.linuxFeatures() & ~LOG_ALL;
            qemu.start(features, true, null, q);
            byte[] data = BlkQueue.pattern(48, 8192, 22);
            q.write(48, data);
            fd[0] = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
            try (Mapping log = Mapping.map(fd[0], 0, LogProtocolTest.logBytes(), false, false)) {
                VhostUserFrontend f = qemu.f;
                assertNotNull(f.request(SET_LOG_BASE, LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), fd[0]));
                f.setFeatures(features | LOG_ALL);
                f.setVringEnable(0, true);
                f.post(VhostUserFrontend.SET_VRING_ADDR, LogProtocolTest.addrWithLog(0, q.descUser(), q.usedUser(),
                        q.availUser(), 1, q.driver.usedGpa()));
                assertArrayEquals(data, q.read(48, 8192), "the ring runs on after the re-enable");
                assertTrue(dirty(log, q.dataGpa) && dirty(log, q.driver.usedGpa()), "read data and used ring logged");
                // Cancelled.
                f.setFeatures(features);
                f.setVringEnable(0, true);
                f.post(VhostUserFrontend.SET_VRING_ADDR, LogProtocolTest.addrWithLog(0, q.descUser(), q.usedUser(),
                        q.availUser(), 0, 0));
                q.write(64, data);
                assertArrayEquals(data, q.read(64, 8192));
                assertEquals(q.driver.availIdx(), qemu.stop(q)[0], "stopped where the driver is");
            } finally {
                Native.libc().close(fd[0]);
            }
        }
        assertEquals(0, rig.complaints(sessions).size(), String.valueOf(rig.complaints(sessions)));
    }

    /**
     * QEMU 8.2+ without REPLY_ACK ({@code vhost_user_write_sync}): each synchronous SET
     * (SET_VRING_ENABLE always, SET_FEATURES with LOG_ALL) is followed by a GET_FEATURES barrier,
     * at start and at stop; the memory goes as ADD_MEM_REG without need_reply
     * ({@code vhost_user_backend_init} does not tie CONFIGURE_MEM_SLOTS to REPLY_ACK). Order as in
     * {@code vhost_user_backend_init}: GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
     * GET_MAX_MEM_SLOTS.
     */
    @Test
    void getFeaturesBarriersWithoutReplyAck() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 128, true);
            qemu.init(CrashRecoveryTest.PROTOCOL & ~VhostUserFrontend.PF_REPLY_ACK, q);
            assertEquals(0, qemu.protocol & VhostUserFrontend.PF_REPLY_ACK);
            VhostUserFrontend f = qemu.f;
            long features = qemu.linuxFeatures() & ~LOG_ALL;
            // start() without its enables, then each enable with its barrier.
            f.setFeatures(features);
            qemu.inflight = f.getInflightFd(1, q.driver.size());
            f.setInflightFd(qemu.inflight);
            f.setVringFd(VhostUserFrontend.SET_VRING_CALL, 0, q.call);
            f.setFeatures(features);
            // CONFIGURE_MEM_SLOTS without REPLY_ACK: ADD_MEM_REG without need_reply (vhost_user_add_remove_regions).
            for (VhostUserFrontend.Region r : guest.regions()) {
                f.post(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), guest.fd);
            }
            f.setVringNum(0, q.driver.size());
            f.setVringBase(0, 0);
            f.setVringAddr(0, q.descUser(), q.usedUser(), q.availUser());
            f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, q.kick);
            f.setVringEnable(0, true);
            assertEquals(qemu.offered, f.getFeatures(), "GET_FEATURES barrier after the enable");
            // SET_FEATURES on the started device (8.1+) is followed by the re-enable and its barrier.
            f.setFeatures(features);
            f.setVringEnable(0, true);
            assertEquals(qemu.offered, f.getFeatures(), "GET_FEATURES barrier after the 8.1+ re-enable");
            byte[] data = BlkQueue.pattern(80, 4096, 23);
            q.write(80, data);
            assertArrayEquals(data, q.read(80, 4096));
            f.setVringEnable(0, false);
            assertEquals(qemu.offered, f.getFeatures(), "GET_FEATURES barrier after the disable");
            assertEquals(2, f.getVringBase(0));
        }
        assertEquals(0, rig.complaints(sessions).size(), String.valueOf(rig.complaints(sessions)));
    }
}
