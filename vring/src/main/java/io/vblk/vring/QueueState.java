package io.vblk.vring;

/**
 * Everything needed to resume a queue elsewhere (another engine, a restarted backend, the other
 * end of a migration): its ring layout and where the device had got to.
 *
 * @param size queue size
 * @param descAddress guest-physical address of the descriptor table
 * @param availAddress guest-physical address of the available ring
 * @param usedAddress guest-physical address of the used ring
 * @param nextAvail the next available-ring index the device will process (vhost-user's vring base)
 * @param nextUsed the next used-ring index the device will fill, or {@link #USED_FROM_RING} to
 *                 take it from {@code used.idx} in guest memory when the queue starts
 */
public record QueueState(int size, long descAddress, long availAddress, long usedAddress, int nextAvail, int nextUsed) {
    /** {@code nextUsed} meaning "read used.idx from the ring at start" (vhost-user set-up). */
    public static final int USED_FROM_RING = -1;

    /** This state with a different next available index. */
    public QueueState withNextAvail(int value) {
        return new QueueState(size, descAddress, availAddress, usedAddress, value & 0xFFFF, nextUsed);
    }

    /** This state with a different next used index. */
    public QueueState withNextUsed(int value) {
        return new QueueState(size, descAddress, availAddress, usedAddress, nextAvail, value & 0xFFFF);
    }
}
