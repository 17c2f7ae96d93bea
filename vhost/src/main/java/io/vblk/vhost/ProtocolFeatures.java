package io.vblk.vhost;

/**
 * vhost-user protocol feature bits (GET/SET_PROTOCOL_FEATURES), and the set vblk offers.
 */
final class ProtocolFeatures {
    static final int MQ = 0;
    static final int LOG_SHMFD = 1;
    static final int REPLY_ACK = 3;
    static final int BACKEND_REQ = 5;
    static final int CONFIG = 9;
    static final int INFLIGHT_SHMFD = 12;
    static final int RESET_DEVICE = 13;
    static final int CONFIGURE_MEM_SLOTS = 15;
    static final int STATUS = 16;

    /**
     * What vblk offers: several queues, acknowledgements on demand, the config space (QEMU
     * refuses a vhost-user-blk backend without it), the dirty log in a shared memfd (live
     * migration: QEMU refuses to migrate without VHOST_F_LOG_ALL, and LOG_SHMFD), inflight tracking in memory the frontend
     * keeps (so a restarted backend redoes exactly the requests in flight when it died), a
     * device reset that keeps the connection, and memory regions added and removed one at a
     * time (so memory hot-plug does not rebuild the whole table and is not limited to 8 regions),
     * and the backend request channel, on which an online resize is announced (CONFIG_CHANGE_MSG).
     */
    static final long OFFERED = bit(MQ) | bit(LOG_SHMFD) | bit(REPLY_ACK) | bit(BACKEND_REQ) | bit(CONFIG)
            | bit(INFLIGHT_SHMFD) | bit(RESET_DEVICE) | bit(CONFIGURE_MEM_SLOTS);

    private ProtocolFeatures() {
    }

    static long bit(int bit) {
        return 1L << bit;
    }

    static boolean has(long features, int bit) {
        return (features & (1L << bit)) != 0;
    }
}
