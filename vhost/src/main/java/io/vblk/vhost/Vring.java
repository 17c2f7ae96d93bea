package io.vblk.vhost;

import io.vblk.engine.BlockDevice;
import io.vblk.sys.EventFd;

/**
 * What a frontend told vblk about one virtqueue, and whether it runs. The ring starts (the
 * device queue is started) once it has a size, addresses, a kick (an eventfd, or "no fd" for a
 * polled ring) and is enabled; GET_VRING_BASE stops it and takes the kick away, so only a new
 * SET_VRING_KICK starts it again (vhost-user.rst, "Starting and stopping rings").
 *
 * <p>Ring addresses are kept as the frontend's virtual addresses and translated at each start,
 * so a new memory table moves the ring with it.
 */
final class Vring {
    final int index;
    /** Queue size from SET_VRING_NUM, 0 until then. */
    int num;
    boolean addressed;
    long descUser;
    long availUser;
    long usedUser;
    /** The next available index to process: SET_VRING_BASE, or where the last stop left off. */
    int base;
    /** A SET_VRING_KICK arrived since the last GET_VRING_BASE. */
    boolean kickReady;
    /** The kick eventfd; null when the ring is polled ("no fd"). */
    EventFd kick;
    /** The call eventfd; null when the frontend wants no interrupts. */
    EventFd call;
    /** SET_VRING_ENABLE state; only consulted when PROTOCOL_FEATURES was negotiated. */
    boolean enabled;
    /** The device queue is started (running, or quarantined since it started). */
    boolean running;
    /**
     * An inflight buffer was installed since the ring last started: the next start recovers
     * from the ring's region (resubmits what a previous backend left in flight) before running.
     * A restart after an internal stop does not: the device kept its own state then.
     */
    boolean recoverInflight;
    /**
     * Where the device logs its used-ring writes while logging is on: SET_VRING_ADDR's
     * {@code log_guest_addr} when it had VHOST_VRING_F_LOG, else {@link BlockDevice.USED_LOG_OFF}.
     */
    long usedLogAddress = BlockDevice.USED_LOG_OFF;

    Vring(int index) {
        this.index = index;
    }

    /** Forgets the ring's set-up (device reset); the call eventfd stays, it belongs to the frontend's notifier set-up. */
    void forgetSetup() {
        num = 0;
        addressed = false;
        descUser = 0;
        availUser = 0;
        usedUser = 0;
        base = 0;
        kickReady = false;
        enabled = false;
        recoverInflight = false;
        usedLogAddress = BlockDevice.USED_LOG_OFF;
    }

    @Override
    public String toString() {
        return String.format("vring %d [size %d, desc 0x%x, avail 0x%x, used 0x%x, base %d%s%s%s]", index, num, descUser,
                availUser, usedUser, base, kickReady ? (kick == null ? ", polled" : ", kick") : "",
                enabled ? ", enabled" : "", running ? ", running" : "");
    }
}
