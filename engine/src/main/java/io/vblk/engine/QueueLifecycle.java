package io.vblk.engine;

/**
 * Where a {@link DeviceQueue} is in its life. Written on the queue's I/O thread only (the control
 * plane changes it through commands run there); read anywhere.
 *
 * <pre>
 *   STOPPED --start--> RUNNING --stop--> STOPPING --drained--> STOPPED
 *                         |                  |
 *                         +----fault---------+--> BROKEN --reset--> STOPPED
 * </pre>
 */
enum QueueLifecycle {
    /** Not popping; the ring may be unconfigured. */
    STOPPED,
    /** Popping and completing. */
    RUNNING,
    /** Not popping; waiting for its in-flight requests to complete and be published. */
    STOPPING,
    /** Quarantined: a ring error or a fault stopped it; sticky until a reset. */
    BROKEN;

    /** Whether the queue may still complete requests (a stop drains, a break does not pop). */
    boolean live() {
        return this == RUNNING || this == STOPPING;
    }
}
