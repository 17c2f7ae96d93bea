package io.vblk.engine;

import java.util.Locale;

/** Whether one thread both submits and completes requests, or two threads split the work. */
public enum ThreadingMode {
    /**
     * One I/O thread pops, submits, reaps and completes. Fewest cross-thread hand-offs; the default
     * and the better choice on 2 cores.
     */
    SHARED,
    /**
     * The I/O thread pops, submits and reaps; a completion thread, fed through a Disruptor ring,
     * writes statuses and used elements and signals interrupts, taking the interrupt syscall off
     * the submission path.
     */
    DEDICATED;

    /** Parses {@code shared} or {@code dedicated}. */
    public static ThreadingMode parse(String name) {
        try {
            return valueOf(name.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("unknown threading mode '" + name + "' (expected shared or dedicated)", e);
        }
    }
}
