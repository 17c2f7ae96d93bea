package io.vblk.engine;

/**
 * Marks the engine's data-plane threads (I/O threads, shared I/O threads, completion threads), so
 * that a control call made on one (from an {@link Interrupt} or a {@link DeviceListener}
 * callback) fails at once: it would wait for a command that only that very thread can run,
 * deadlocking the device (and, on a shared thread, every device on it) for good.
 */
final class DataPlaneThreads {
    private static final ThreadLocal<Boolean> MARK = new ThreadLocal<>();

    private DataPlaneThreads() {
    }

    /** Called once by each data-plane thread when it starts. */
    static void markCurrent() {
        MARK.set(Boolean.TRUE);
    }

    /** Whether the calling thread is one of the engine's data-plane threads. */
    static boolean isCurrent() {
        return MARK.get() != null;
    }
}
