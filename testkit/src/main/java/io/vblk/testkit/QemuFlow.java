package io.vblk.testkit;

import java.nio.ByteBuffer;
import java.util.Arrays;

import io.vblk.sys.EventFd;
import io.vblk.sys.Native;

/**
 * The message sequence QEMU 7.2's vhost-user-blk sends, message by message (facts.md):
 * initialisation when the device is realized, start when the guest driver sets DRIVER_OK, stop
 * when it resets the device; and {@link #goodFrontendRoundTrip}, the well-behaved frontend that
 * hostile-frontend tests send after each hostile one. Failures are {@link AssertionError}s.
 */
public final class QemuFlow implements AutoCloseable {
    /** The protocol features QEMU 7.2's vhost-user-blk asks for (what {@link #init} is usually given). */
    public static final long ALL_PROTOCOL = VhostUserFrontend.PF_MQ | VhostUserFrontend.PF_REPLY_ACK | VhostUserFrontend.PF_CONFIG
            | VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS;
    /** What a Linux 6.1 guest acks of vblk's offer: everything but RO, as Linux does. */
    public static final long VIRTIO_F_VERSION_1 = 1L << 32;
    public static final long VIRTIO_RING_F_EVENT_IDX = 1L << 29;
    public static final long VIRTIO_RING_F_INDIRECT_DESC = 1L << 28;
    /** What SeaBIOS acks through a legacy virtio-blk: no VERSION_1, no EVENT_IDX. */
    public static final long LEGACY_MASK = ~(VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC);

    public final VhostUserFrontend f;
    public final TestGuest guest;
    public final int queues;
    /** Each queue's error eventfd (SET_VRING_ERR): a quarantine signals it. */
    public final EventFd[] errs;
    public long offered;
    public long protocol;
    /**
     * The inflight buffer (INFLIGHT_SHMFD): asked for at the first start and sent at every start,
     * as QEMU keeps it across backend restarts. Set it to hand a buffer over from another flow.
     */
    public VhostUserFrontend.Inflight inflight;
    /** The queue size announced in GET_INFLIGHT_FD (QEMU's queue-size property); 0: the first ring's size. */
    public int inflightQueueSize;

    public QemuFlow(VhostUserFrontend f, TestGuest guest, int queues) {
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
    public byte[] init(long protocolWanted, BlkQueue... qs) {
        offered = f.getFeatures();
        check((offered & VhostUserFrontend.F_PROTOCOL_FEATURES) != 0, "PROTOCOL_FEATURES offered");
        long offeredProtocol = f.getProtocolFeatures();
        protocol = offeredProtocol & protocolWanted;
        f.setProtocolFeatures(protocol);
        if ((protocol & VhostUserFrontend.PF_MQ) != 0) {
            check(f.getU64(VhostUserFrontend.GET_QUEUE_NUM) >= queues, "enough queues");
        }
        if ((protocol & VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS) != 0) {
            check(f.getU64(VhostUserFrontend.GET_MAX_MEM_SLOTS) >= 2, "memory slots");
        }
        f.setOwner();
        long again = f.getFeatures();
        check(again == offered, "GET_FEATURES again: " + again + ", offered first " + offered);
        for (int q = 0; q < queues; q++) {
            f.setVringFd(VhostUserFrontend.SET_VRING_CALL, q, qs[q].call);
            f.setVringFd(VhostUserFrontend.SET_VRING_ERR, q, errs[q]);
        }
        byte[] config = f.getConfig(0, 57);
        check(config != null, "GET_CONFIG answered");
        return config;
    }

    /** The features a Linux guest acks: all it knows of, and it knows all vblk offers. */
    public long linuxFeatures() {
        return offered;
    }

    /** The features SeaBIOS acks through the legacy interface. */
    public long legacyFeatures() {
        return offered & LEGACY_MASK;
    }

    /**
     * DRIVER_OK: SET_FEATURES, [GET_INFLIGHT_FD the first time, SET_INFLIGHT_FD with INFLIGHT_SHMFD],
     * SET_VRING_CALL again, SET_FEATURES again, the memory table (one
     * ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS, else SET_MEM_TABLE; acknowledged with
     * REPLY_ACK), per queue SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, then
     * SET_VRING_ENABLE 1 for every queue.
     */
    public void start(long features, boolean sendMemory, int[] bases, BlkQueue... qs) {
        f.setFeatures(features);
        if ((protocol & VhostUserFrontend.PF_INFLIGHT_SHMFD) != 0) {
            if (inflight == null) {
                inflight = f.getInflightFd(queues, inflightQueueSize > 0 ? inflightQueueSize : qs[0].driver.size());
                check(inflight.fd() >= 0, "GET_INFLIGHT_FD answered with a buffer: " + inflight);
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

    public void sendMemory(VhostUserFrontend.Region[] memory) {
        boolean ack = (protocol & VhostUserFrontend.PF_REPLY_ACK) != 0;
        if ((protocol & VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS) != 0) {
            for (VhostUserFrontend.Region r : memory) {
                acked(f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), fdOf(r)), "ADD_MEM_REG " + r);
            }
        } else {
            ByteBuffer table = VhostUserFrontend.memTable(memory);
            int[] fds = new int[memory.length];
            for (int i = 0; i < fds.length; i++) {
                fds[i] = fdOf(memory[i]);
            }
            if (ack) {
                acked(f.acked(VhostUserFrontend.SET_MEM_TABLE, table, fds), "SET_MEM_TABLE");
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
    public int[] stop(BlkQueue... qs) {
        for (int q = 0; q < queues; q++) {
            f.setVringEnable(q, false);
        }
        int[] bases = new int[qs.length];
        for (int i = 0; i < qs.length; i++) {
            bases[i] = f.getVringBase(qs[i].index);
        }
        return bases;
    }

    /**
     * A well-behaved frontend on {@code f}, as QEMU 7.2 with a Linux guest: set-up with
     * {@link #ALL_PROTOCOL} and every SET acknowledged, a write of a block that names
     * {@code tag} at {@link #goodSector}{@code (tag)}, its read-back, a flush, stop (next_avail
     * 3), and never quarantined (its error eventfd unsignalled). For after each hostile
     * frontend: whatever that one did, the server must still serve this one. Closes {@code f}.
     *
     * @return the sector written, holding {@code BlkQueue.pattern(sector, 4096, (int) tag)}
     * @throws AssertionError when any of it fails
     */
    public static long goodFrontendRoundTrip(VhostUserFrontend f, TestGuest guest, BlkQueue q, long tag) {
        q.driver.initialise();
        q.call.read();
        long sector = goodSector(tag);
        byte[] data = BlkQueue.pattern(sector, 4096, (int) tag);
        try (QemuFlow qemu = new QemuFlow(f, guest, 1)) {
            f.ackEverything(true);
            qemu.init(ALL_PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            q.write(sector, data);
            check(Arrays.equals(data, q.read(sector, 4096)), "read-back of sector " + sector + " (tag " + tag + ")");
            q.flush();
            int base = qemu.stop(q)[0];
            check(base == 3, "GET_VRING_BASE after a write, a read and a flush: " + base);
            // Quarantine signals the queue's error eventfd (needs-reset) before the queue stops:
            // a good frontend must never see it, whatever a hostile one did before it.
            long needsReset = qemu.errs[0].read();
            check(needsReset < 0, "the good frontend of tag " + tag + " was quarantined (error eventfd " + needsReset + ")");
        }
        return sector;
    }

    /** The sector {@link #goodFrontendRoundTrip} writes for {@code tag}: one of 2048 4-KiB blocks. */
    public static long goodSector(long tag) {
        return Math.floorMod(tag, 2048L) * 8;
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    private static void acked(long reply, String request) {
        check(reply == 0, request + " acknowledged with " + reply + ", not 0");
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
