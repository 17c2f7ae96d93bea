package io.vblk.sys;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * A fault-injection seam for tests of the guest-memory fault model (engine's GuestFaults):
 * throws, at exactly one named point of a request's life, the {@link InternalError} HotSpot
 * raises for a SIGBUS in an {@code Unsafe} access, so every point can be tested
 * deterministically. A real SIGBUS (a memfd truncated under the mapping) cannot be placed: Java
 * 17 delivers it from compiled code as an asynchronous error at a later safepoint, somewhere the
 * test does not choose (engine's FaultPointTest runs that variant).
 *
 * <p>Cost when unused: {@link #at} is one read of a volatile int (a plain load on x86) and a
 * branch never taken, at points that already read guest memory. Not for production use:
 * nothing arms it but tests.
 */
public final class FaultPoints {
    /** vring: popping the next available chain (before it is claimed). */
    public static final int POP = 1;
    /** engine: parsing a claimed request's header. */
    public static final int PARSE = 2;
    /** aio: copying a write's guest data into its bounce buffer. */
    public static final int BOUNCE_COPY = 3;
    /** aio: copying a bounced read's data back into guest memory. */
    public static final int BOUNCE_COPY_BACK = 4;
    /**
     * aio: just after the submit system call returned, before its answer is used: where a fault
     * the JVM delivers late lands if it lands in a native-call transition of the submit.
     */
    public static final int SUBMIT_RETURNED = 5;
    /** aio: just after a completion was taken from the kernel (or a queue), before it is finished. */
    public static final int REAP_TAKEN = 6;
    /** aio: just after a request took a back-end slot, before the slot is queued anywhere. */
    public static final int PREPARE_TAKEN = 7;
    /** engine: a request half claimed: between counting it in flight and naming its queue. */
    public static final int CLAIMING = 8;
    /** engine: a request just handed to the back end or the completion route, before its stage says so. */
    public static final int HANDING = 9;
    /** block/nbd: submit just took a prepared request off its pending list, before a connection holds it. */
    public static final int HANDING_OVER = 10;
    /** block/nbd: a connection just finished a request (no longer holds its slot), before it is listed for delivery. */
    public static final int FINISHING = 11;
    /** engine: inside a one-shot control command on a queue's I/O thread (a reset, a kick or tracker change). */
    public static final int COMMAND = 12;
    /** engine: a queue's start command, just after it marked the queue running. */
    public static final int STARTED = 13;
    /** engine: a kick or interrupt change on the I/O thread, before its swap (a running queue's old kick unwatched). */
    public static final int SWAPPING = 14;
    /** engine: a kick or interrupt change, just after its swap, before the new kick is watched or the completion fence taken. */
    public static final int SWAPPED = 15;
    /** engine: a kick or interrupt change, after the new kick is watched or the completion fence taken, before it is done. */
    public static final int SWAP_ENDING = 16;

    /** The message HotSpot gives the error (engine's GuestFaults.isMemoryFault matches it). */
    public static final String MESSAGE = "a fault occurred in an unsafe memory access operation (injected)";

    private static final VarHandle ARMED;

    static {
        try {
            ARMED = MethodHandles.lookup().findStaticVarHandle(FaultPoints.class, "armed", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    @SuppressWarnings("unused") // through ARMED
    private static volatile int armed;

    private FaultPoints() {
    }

    /** Arms {@code point}: the next thread that passes it throws, once. */
    public static void arm(int point) {
        armed = point;
    }

    /** Disarms. */
    public static void disarm() {
        armed = 0;
    }

    /** Whether the armed point has fired (or nothing was armed). */
    public static boolean fired() {
        return armed == 0;
    }

    /** Throws the JVM's guest-memory fault if {@code point} is armed (once). */
    public static void at(int point) {
        if (armed == point && ARMED.compareAndSet(point, 0)) {
            throw new InternalError(MESSAGE);
        }
    }
}
