package io.vblk.engine;

/**
 * Events a device reports to its owner, from data-plane threads: keep the handlers short and
 * non-blocking.
 */
public interface DeviceListener {
    /** A listener that ignores everything. */
    DeviceListener NONE = new DeviceListener() { };

    /**
     * Queue {@code queue} found its ring corrupt and was quarantined (virtio 1.2 2.1.2: the device
     * should set DEVICE_NEEDS_RESET). It stays quarantined until reset; other queues keep running.
     */
    default void queueBroken(int queue, String reason) {
    }
}
