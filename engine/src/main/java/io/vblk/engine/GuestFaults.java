package io.vblk.engine;

import org.agrona.UnsafeApi;

/**
 * The fault model: what happens when guest memory faults under a request.
 *
 * <p>Guest memory (and the vhost-user inflight region) is a shared mapping of a file the
 * frontend owns. If the frontend shrinks that file, or hugetlbfs runs out of pages, an access
 * raises SIGBUS. HotSpot turns a SIGBUS in an {@code Unsafe} access into an
 * {@link InternalError}, but on Java 17 not at the access: the faulting load yields garbage, the
 * thread runs on, and the error is thrown at the thread's next transition out of the VM (or an
 * armed safepoint poll), which may be much later and in unrelated code. A catch-all around the
 * loop therefore cannot tell which request or queue faulted, or whether a slot it claimed was
 * handed on. {@link #check()} forces that transition: a pending fault is thrown there, and only
 * there in practice (measured: about 20 ns per call). The data path calls it at the end of each
 * stage that touches guest memory, so a fault is always caught in the stage that caused it:
 *
 * <table>
 * <caption>Fault points and their outcome</caption>
 * <tr><th>stage (thread)</th><th>memory touched</th><th>on a fault</th></tr>
 * <tr><td>pop (I/O)</td><td>avail ring, descriptor table (and indirect tables)</td>
 *     <td>caught at the parse check of the same request: the slot is released, in-flight
 *     count restored, the queue quarantined; nothing reached the back end</td></tr>
 * <tr><td>inflight-region write, popped (I/O)</td><td>the inflight region</td><td>same as pop</td></tr>
 * <tr><td>parse (I/O)</td><td>request header, discard/write-zeroes segments</td><td>same as pop</td></tr>
 * <tr><td>bounce copy of a write (I/O, in the back end's prepare)</td><td>the guest's data</td>
 *     <td>caught at the next check on the same queue (the next request's parse check or the end
 *     of the queue's pop): the operation is already the back end's and completes (writing
 *     undefined data, which the guest's own memory holds); the queue is quarantined</td></tr>
 * <tr><td>bounce copy-back of a read (reaper, in the back end's poll)</td><td>the guest's data</td>
 *     <td>caught at the completion check of the same request</td></tr>
 * <tr><td>completion write (completing thread)</td><td>status byte, used element, inflight
 *     region</td><td>caught by the completion check: the slot is still released, the queue
 *     marked faulted; later completions of that queue skip guest memory; the I/O thread
 *     quarantines it at its next round</td></tr>
 * <tr><td>used publish (completing thread)</td><td>used.idx, avail's used_event, inflight
 *     region</td><td>caught at the publish check: the queue is marked faulted, no interrupt</td></tr>
 * <tr><td>a control command (I/O)</td><td>ring indices at start</td><td>the command fails with
 *     the error; its caller gets it</td></tr>
 * </table>
 *
 * <p>Whatever the point: every claimed slot is released exactly once, in-flight counts stay
 * exact (so {@code stopQueue}, {@code setMemory} and {@code close} return), the queue reports
 * needs-reset through {@link DeviceListener#queueBroken} and stays quarantined until a reset,
 * and other queues (and devices) go on. A fault the checks cannot place (one delivered early by
 * an unrelated safepoint, a window of a few instructions) still lands in the I/O thread's
 * catch-all, which quarantines that thread's queues: safe, if broader than needed.
 */
final class GuestFaults {
    private static final long SCRATCH = UnsafeApi.allocateMemory(8);

    private GuestFaults() {
    }

    /**
     * Throws here a guest-memory fault that is pending on this thread (an {@link InternalError}).
     * {@code Unsafe.setMemory} is a VM entry on Java 17 (not an intrinsic), and leaving the VM
     * delivers pending asynchronous errors.
     */
    static void check() {
        UnsafeApi.setMemory(SCRATCH, 1, (byte) 0);
    }

    /** Whether {@code e} is a fault in guest memory raised by the JVM (SIGBUS/SIGSEGV in Unsafe). */
    static boolean isMemoryFault(Throwable e) {
        return e instanceof InternalError && String.valueOf(e.getMessage()).contains("unsafe memory access");
    }
}
