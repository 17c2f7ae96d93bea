package io.vblk.engine;

import java.util.Locale;

/**
 * How an idle data-plane thread waits for work. The trade-off is CPU against latency: spinning
 * answers a kick in nanoseconds but burns a core the guest may need (on 2 cores two spinning
 * threads starve the guest, the JIT and the GC); blocking costs a wake-up syscall per batch but
 * leaves the core free.
 */
public enum WaitStrategy {
    /** Spin forever on the rings; the driver is told not to kick. Lowest latency, one full core. */
    BUSY_SPIN,
    /** Spin briefly, then {@code Thread.yield()} in a loop; never sleeps. Shares the core politely. */
    YIELDING,
    /** Spin, yield, then park for {@link Tuning#sleepNs()}: bounded latency, little CPU, no kicks. */
    SLEEPING,
    /** Re-enable notifications and sleep on the kick / completion eventfds as soon as idle. */
    BLOCKING,
    /**
     * Spin for {@link Tuning#pollNs()} after the last work (kicks suppressed meanwhile), then block
     * like {@link #BLOCKING}. The default: polling catches the next request of a busy guest without
     * a kick or a wake-up, blocking keeps an idle device at zero CPU.
     */
    ADAPTIVE;

    /** Parses {@code busy-spin}, {@code yielding}, {@code sleeping}, {@code blocking}, {@code adaptive}. */
    public static WaitStrategy parse(String name) {
        String n = name.trim().toUpperCase(Locale.ROOT).replace('-', '_');
        for (WaitStrategy s : values()) {
            if (s.name().equals(n)) {
                return s;
            }
        }
        throw new IllegalArgumentException("unknown wait strategy '" + name
                + "' (expected busy-spin, yielding, sleeping, blocking or adaptive)");
    }

    /** The command-line spelling. */
    public String cliName() {
        return name().toLowerCase(Locale.ROOT).replace('_', '-');
    }
}
