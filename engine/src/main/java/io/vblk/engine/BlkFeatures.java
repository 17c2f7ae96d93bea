package io.vblk.engine;

/**
 * virtio-blk and ring feature bits (virtio 1.2 5.2.3 and 6), as bit numbers and masks.
 */
public final class BlkFeatures {
    public static final int SIZE_MAX = 1;
    public static final int SEG_MAX = 2;
    public static final int GEOMETRY = 4;
    public static final int RO = 5;
    public static final int BLK_SIZE = 6;
    public static final int FLUSH = 9;
    public static final int TOPOLOGY = 10;
    public static final int CONFIG_WCE = 11;
    public static final int MQ = 12;
    public static final int DISCARD = 13;
    public static final int WRITE_ZEROES = 14;
    public static final int LIFETIME = 15;
    public static final int SECURE_ERASE = 16;
    public static final int RING_INDIRECT_DESC = 28;
    public static final int RING_EVENT_IDX = 29;
    /** vhost-user: the backend speaks protocol features (not a virtio feature the guest sees). */
    public static final int VHOST_USER_PROTOCOL_FEATURES = 30;
    public static final int VERSION_1 = 32;

    private BlkFeatures() {
    }

    /** The mask of feature bit {@code bit}. */
    public static long bit(int bit) {
        return 1L << bit;
    }

    /** Whether {@code features} has {@code bit}. */
    public static boolean has(long features, int bit) {
        return (features & (1L << bit)) != 0;
    }
}
