package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;

import io.vblk.sys.EventFd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * The message sequence QEMU 7.2's vhost-user-blk sends, message by message (facts.md):
 * initialisation when the device is realized, start when the guest driver sets DRIVER_OK, stop
 * when it resets the device.
 */
final class QemuFlow implements AutoCloseable {
    /** What a Linux 6.1 guest acks of vblk's offer: everything but RO, as Linux does. */
    static final long VIRTIO_F_VERSION_1 = 1L << 32;
    static final long VIRTIO_RING_F_EVENT_IDX = 1L << 29;
    static final long VIRTIO_RING_F_INDIRECT_DESC = 1L << 28;
    /** What SeaBIOS acks through a legacy virtio-blk: no VERSION_1, no EVENT_IDX. */
    static final long LEGACY_MASK = ~(VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC);

    final VhostUserFrontend f;
    final TestGuest guest;
    final int queues;
    final EventFd[] errs;
    long offered;
    long protocol;
    /**
     * The inflight buffer (INFLIGHT_SHMFD): asked for at the first start and sent at every start,
     * as QEMU keeps it across backend restarts. Set it to hand a buffer over from another flow.
     */
    VhostUserFrontend.Inflight inflight;
    /** The queue size announced in GET_INFLIGHT_FD (QEMU's queue-size property); 0: the first ring's size. */
    int inflightQueueSize;

    QemuFlow(VhostUserFrontend f, TestGuest guest, int queues) {
        this.f = f;
        this.guest = guest;
        this.queues = queues;
        this.errs = new EventFd[queues];
        for (int q = 0; q < queues; q++) {
            errs[q] = EventFd.create(true);
        }
    }

    /**
     * Device realize: GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (MQ),
     * GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS), SET_OWNER, GET_FEATURES, per queue SET_VRING_CALL
     * and SET_VRING_ERR, GET_CONFIG of 57 bytes. Returns the config bytes.
     */
    byte[] init(long protocolWanted, BlkQueue... qs) {
        offered = f.getFeatures();
        assertTrue((offered & VhostUserFrontend.F_PROTOCOL_FEATURES) != 0, "PROTOCOL_FEATURES offered");
        long offeredProtocol = f.getProtocolFeatures();
        protocol = offeredProtocol & protocolWanted;
        f.setProtocolFeatures(protocol);
        if ((protocol & VhostUserFrontend.PF_MQ) != 0) {
            assertTrue(f.getU64(VhostUserFrontend.GET_QUEUE_NUM) >= queues, "enough queues");
        }
        if ((protocol & VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS) != 0) {
            assertTrue(f.getU64(VhostUserFrontend.GET_MAX_MEM_SLOTS) >= 2, "memory slots");
        }
        f.setOwner();
        assertEquals(offered, f.getFeatures());
        for (int q = 0; q < queues; q++) {
            f.setVringFd(VhostUserFrontend.SET_VRING_CALL, q, qs[q].call);
            f.setVringFd(VhostUserFrontend.SET_VRING_ERR, q, errs[q]);
        }
        byte[] config = f.getConfig(0, 57);
        assertNotEquals(null, config);
        return config;
    }

    /** The features a Linux guest acks: all it knows of, and it knows all vblk offers. */
    long linuxFeatures() {
        return offered;
    }

    /** The features SeaBIOS acks through the legacy interface. */
    long legacyFeatures() {
        return offered & LEGACY_MASK;
    }

    /**
     * DRIVER_OK: SET_FEATURES, [GET_INFLIGHT_FD the first time, SET_INFLIGHT_FD with INFLIGHT_SHMFD],
     * SET_VRING_CALL again, SET_FEATURES again, the memory table (one
     * ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS, else SET_MEM_TABLE; acknowledged with
     * REPLY_ACK), per queue SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, then
     * SET_VRING_ENABLE 1 for every queue.
     */
    void start(long features, boolean sendMemory, int[] bases, BlkQueue... qs) {
        f.setFeatures(features);
        if ((protocol & VhostUserFrontend.PF_INFLIGHT_SHMFD) != 0) {
            if (inflight == null) {
                inflight = f.getInflightFd(queues, inflightQueueSize > 0 ? inflightQueueSize : qs[0].driver.size());
                assertTrue(inflight.fd() >= 0, "GET_INFLIGHT_FD answered with a buffer: " + inflight);
            }
            f.setInflightFd(inflight);
        }
        for (BlkQueue q : qs) {
            f.setVringFd(VhostUserFrontend.SET_VRING_CALL, q.index, q.call);
        }
        f.setFeatures(features);
        if (sendMemory) {
            sendMemory(guest.regions());
        }
        for (int i = 0; i < qs.length; i++) {
            BlkQueue q = qs[i];
            f.setVringNum(q.index, q.driver.size());
            f.setVringBase(q.index, bases == null ? 0 : bases[i]);
            f.setVringAddr(q.index, q.descUser(), q.usedUser(), q.availUser());
            f.setVringFd(VhostUserFrontend.SET_VRING_KICK, q.index, q.polled ? null : q.kick);
        }
        for (int q = 0; q < queues; q++) {
            f.setVringEnable(q, true);
        }
    }

    void sendMemory(VhostUserFrontend.Region[] memory) {
        boolean ack = (protocol & VhostUserFrontend.PF_REPLY_ACK) != 0;
        if ((protocol & VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS) != 0) {
            for (VhostUserFrontend.Region r : memory) {
                assertEquals(0, f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), fdOf(r)), "ADD_MEM_REG " + r);
            }
        } else {
            ByteBuffer table = VhostUserFrontend.memTable(memory);
            int[] fds = new int[memory.length];
            for (int i = 0; i < fds.length; i++) {
                fds[i] = fdOf(memory[i]);
            }
            if (ack) {
                assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, table, fds), "SET_MEM_TABLE");
            } else {
                f.send(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.VERSION, table, fds);
            }
        }
    }

    /** The descriptor backing region {@code r}: every region of a test guest is in its memfd. */
    private int fdOf(VhostUserFrontend.Region r) {
        return guest.fd;
    }

    /** Device reset: SET_VRING_ENABLE 0 for every queue, then GET_VRING_BASE per started queue. */
    int[] stop(BlkQueue... qs) {
        for (int q = 0; q < queues; q++) {
            f.setVringEnable(q, false);
        }
        int[] bases = new int[qs.length];
        for (int i = 0; i < qs.length; i++) {
            bases[i] = f.getVringBase(qs[i].index);
        }
        return bases;
    }

    @Override
    public void close() {
        for (EventFd e : errs) {
            e.close();
        }
        if (inflight != null && inflight.fd() >= 0) {
            Native.libc().close(inflight.fd());
        }
        f.close();
    }
}
