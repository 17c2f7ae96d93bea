package io.vblk.engine;

/**
 * Events a device reports to its owner, from data-plane threads: keep the handlers short and
 * non-blocking. A handler must not call the device's control methods ({@code stopQueue},
 * {@code reset}, {@code close}, ...): they wait for the thread the handler runs on, so they
 * throw {@link IllegalStateException} there; hand the call to another thread (an executor).
 * An exception a handler throws is the owner's bug: it must not throw.
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

    /**
     * A guest-memory fault was caught and attributed (see GuestFaults, "late faults"): which
     * memory showed the evidence, which queues were quarantined for it, or that none showed any
     * and the queue where the fault landed was quarantined. Rare; for the owner's log.
     */
    default void faultAttributed(String report) {
    }

    /**
     * The device's config space changed ({@link BlockDevice#resize}): the VMM should raise the
     * configuration-change interrupt (virtio 1.2 4.1.4.5 ISR bit 1, or the MSI-X config vector)
     * so the driver re-reads it, and bump {@code config_generation} (virtio 1.2 4.1.4.3, the
 * common config's generation byte) so a driver reading the config across the change reads it
 * again. Called on the thread that changed it (the caller of {@code resize}: a control call may
 * follow there, unlike in the other callbacks).
     */
    default void configChanged(BlkConfig config) {
    }

    /**
     * A control call ({@code what}: a queue's stop or drain) has waited {@code waitedMs} on an
     * I/O thread, past the device's report threshold: a back end does not complete the requests
     * in flight. Called once when the wait is reported ({@code ended} false) and once when it
     * ends ({@code ended} true, done or failed), on the waiting control thread; for the owner's
     * log. See {@link BlockDevice#stalledControlCalls()}.
     */
    default void controlCallStalled(String what, long waitedMs, boolean ended) {
    }
}
