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
}
