package io.vblk.engine;

/**
 * Blocks the calling data-plane thread in the kernel until there is work: a kick, a completion,
 * a control command or a throttle deadline. Notifications are re-enabled and the rings
 * re-checked first (the no-lost-kick pattern), so it may also return at once.
 */
@FunctionalInterface
interface KernelSleep {
    /** Sleeps until woken; returns at once when a re-check finds work. */
    void sleep();

    /**
     * Whether polling cannot find work now: the last round signalled a driver that waits for its
     * interrupt and left nothing in flight, so the next request comes only after that driver has
     * been woken and has run, and spinning would only take a CPU it may need. False by default.
     */
    default boolean driverMustRunFirst() {
        return false;
    }
}
