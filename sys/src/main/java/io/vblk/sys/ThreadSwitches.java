package io.vblk.sys;

/**
 * The calling thread's context-switch counts, from {@code getrusage(RUSAGE_THREAD)}: voluntary
 * (it blocked) and involuntary (the scheduler took the CPU away because another runnable thread
 * needed it). A rising involuntary count while a thread polls says the core it spins on is
 * wanted elsewhere. One instance per thread (it owns its result buffer); each read is one system
 * call and allocates nothing.
 */
public final class ThreadSwitches {
    private static final int RUSAGE_THREAD = 1;
    /** {@code struct rusage} on x86-64: two timevals, then fourteen longs ending in ru_nvcsw, ru_nivcsw. */
    private static final int RUSAGE_SIZE = 144;
    private static final int NVCSW_OFFSET = 128;
    private static final int NIVCSW_OFFSET = 136;

    private final NativeBuffer rusage = new NativeBuffer(RUSAGE_SIZE);

    /** The calling thread's involuntary context switches so far (the last value read if the call fails). */
    public long involuntary() {
        read();
        return rusage.buffer().getLong(NIVCSW_OFFSET);
    }

    /** The calling thread's voluntary context switches so far (the last value read if the call fails). */
    public long voluntary() {
        read();
        return rusage.buffer().getLong(NVCSW_OFFSET);
    }

    private void read() {
        // Cannot fail with RUSAGE_THREAD and a valid buffer; if it did, the buffer keeps the last counts.
        Native.syscall(Linux.SYS_GETRUSAGE, RUSAGE_THREAD, rusage.address(), 0, 0, 0);
    }
}
