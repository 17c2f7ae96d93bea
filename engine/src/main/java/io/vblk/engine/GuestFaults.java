package io.vblk.engine;

/**
 * The fault model: what happens when guest memory faults under a request.
 *
 * <p>Guest memory (and the vhost-user inflight region) is a shared mapping of a file the
 * frontend owns. If the frontend shrinks that file, or hugetlbfs runs out of pages, an access
 * raises SIGBUS. HotSpot turns a SIGBUS in an {@code Unsafe} access into an
 * {@link InternalError}, but on Java 17 not at the access: the faulting load yields garbage, the
 * thread runs on, and the error is thrown later, at a point the engine does not control (tried
 * here: neither a VM entry such as {@code Unsafe.setMemory} nor the return of a method that is
 * never inlined or never compiled delivers it in compiled code; a safepoint does). So the model
 * does not try to place the fault; it keeps the accounting exact wherever the error lands:
 *
 * <ul>
 * <li>Every request slot carries its stage ({@link BlkRequest#stage}): claimed by the I/O
 *     thread, or handed to the back end / completion path. After any exception on the I/O
 *     thread (in a queue's pop loop or the round's catch-all) every slot still "claimed" is
 *     given back and its queue's in-flight count restored; a slot is never given back twice.
 *     So {@code stopQueue}, {@code setMemory} and {@code close} always return.</li>
 * <li>A fault inside a queue's pop loop (avail ring, descriptors, header, segments, the
 *     inflight region, a write's bounce copy) quarantines that queue; one that lands in the
 *     round's catch-all quarantines the thread's queues (broader than needed, never wrong).</li>
 * <li>Completion writes (status byte, used element, inflight region) and the used publish are
 *     guarded: a fault there marks the queue faulted ({@link DeviceQueue#faultReason}); the
 *     slot is still released; later completions of that queue skip guest memory; the I/O thread
 *     quarantines it at its next round.</li>
 * <li>Bounce copies in the back ends cannot fault: they go through the kernel
 *     ({@code process_vm_readv}/{@code process_vm_writev} on our own pid, aio BounceCopier),
 *     which answers a cut page with EFAULT and sends no signal; exactly that operation fails
 *     with EFAULT, and an EFAULT result marks its queue faulted. (Where seccomp refuses those
 *     calls the copies fall back to Unsafe, with one log line: a fault there is then caught at
 *     the copy only in interpreted code, and otherwise lands like any other late fault.)</li>
 * <li>The dedicated completion thread has an exception handler: it marks the thread's queues
 *     faulted, gives back the event's request if its completion had not, and lives on (the
 *     default handler let it die and the I/O thread then waited forever).</li>
 * <li>A fault the JVM delivers inside the back end's reap or submit, or between the reap and
 *     the completion route, can lose a request's completion, which no stage can see. A drain of
 *     a quarantined queue therefore gives such requests up ({@link IoThread#settleLost}): once
 *     the back end reports nothing in flight and nothing pending (their slots go back to the
 *     pool). They are counted {@link QueueCounters#LOST}, never completed, and the queue stays
 *     quarantined. Never while the back end still reports work: giving up on an operation that
 *     may really still be running would let the VMM unmap memory it is about to write (a JVM
 *     crash). The back ends keep that report exact whatever point the fault lands at: their
 *     in-flight counts are derived from the kernel's own indices (io_uring: SQ head consumed
 *     against CQ head taken) or from their hand-over queues' own counters, and their lists hand
 *     an operation on only after removing it, so a fault can lose a completion (given up here;
 *     the back-end slot stays out of its pool until close) but neither hide an operation still
 *     running nor keep one counted that has finished. Linux AIO keeps one narrow exception
 *     (aio LinuxAioBackend: a batch the kernel took only partly, with the fault landing right
 *     after io_submit returned): that queue's drain then waits, a hang, never a crash.</li>
 * <li>A fault delivered inside the I/O thread's publish into the dedicated completion ring,
 *     between the lite blocking strategy's flag and its notify, would leave the completion thread
 *     asleep with events published: its wait times out ({@link WaitStrategies}) and it wakes.</li>
 * <li>io_uring's close waits exactly for what the kernel owes (SQ head against CQ head).</li>
 * <li>A quarantined queue reports needs-reset through {@link DeviceListener#queueBroken} and
 *     stays quarantined until a reset ({@link BlockDevice#reset}, {@link
 *     BlockDevice#clearQuarantine}); other devices are unaffected.</li>
 * <li>Known limit, late faults: because the error comes at a later safepoint, it can come after
 *     the faulting queue has already stopped, and land in whatever the same I/O thread serves
 *     then: the queue of the frontend that connects next (seen in FrontendFuzzTest) or of
 *     another device sharing that I/O thread. That queue is then quarantined (needs-reset) with
 *     the same "unsafe memory access" reason; nothing crashes or hangs, and the frontend after it
 *     is served. Not built yet: attributing the error by evidence (which device's memory table
 *     now maps a file shorter than the mapping) instead of by where it lands.</li>
 * </ul>
 *
 * <p>Tested point by point, deterministically, by FaultSeamTest: the same InternalError is thrown
 * at exactly the point through {@link io.vblk.sys.FaultPoints} (pop, parse, bounce copy in and
 * back) or a throwing {@link InflightTracker} (inflight-region write, completion write, used
 * publish). FaultPointTest truncates a real memfd instead, at every point, cold and hot; it
 * cannot choose where Java 17 delivers the error, and checks that wherever it lands the model
 * holds. aio LateFaultAccountingTest throws at the back ends' own worst points (right after the
 * submit call, right after a completion is taken).
 */
final class GuestFaults {
    private GuestFaults() {
    }

    /** Whether {@code e} is a fault in guest memory raised by the JVM (SIGBUS/SIGSEGV in Unsafe). */
    static boolean isMemoryFault(Throwable e) {
        return e instanceof InternalError && String.valueOf(e.getMessage()).contains("unsafe memory access");
    }

    /**
     * Attributes {@code e}, caught on {@code landed}'s OS thread, by evidence ({@link
     * FaultEvidence}): every live queue of the devices that thread runs whose memory table now
     * maps past the end of its file is quarantined here, with the evidence in its reason, and
     * the owner hears one report. Returns true when the fault is attributed: the caller then
     * quarantines nothing more (the queue where it landed is either one of those, or spared,
     * provided it lost nothing). Returns false when {@code e} is no memory fault, or when no
     * table shows evidence (hugetlbfs out of pages; a file grown back): the caller quarantines
     * where it landed, as before, and the report says so. Fault path only (allocates).
     */
    static boolean attribute(IoThread landed, Throwable e) {
        if (!isMemoryFault(e)) {
            return false;
        }
        FaultEvidence.Verdict v = FaultEvidence.judge(landed.sharedMembers(), landed.retiredEvidence());
        if (!v.anyEvidence()) {
            landed.report("guest memory fault on I/O thread " + landed.roleName() + " with no evidence of a file shorter than"
                    + " its mapping: quarantined where the JVM delivered it (" + e.getMessage() + ")");
            return false;
        }
        StringBuilder report = new StringBuilder("guest memory fault on I/O thread ").append(landed.roleName())
                .append(" attributed by evidence: ");
        if (v.culprits.isEmpty()) {
            report.append("only memory no running queue uses (").append(v.staleEvidence)
                    .append("): a late fault of a stopped queue or a frontend that has gone; nothing quarantined");
        } else {
            String reason = "guest memory fault: " + v.liveEvidence + " (" + e + ")";
            report.append(v.liveEvidence).append("; quarantined:");
            for (int i = 0; i < v.culprits.size(); i++) {
                DeviceQueue q = v.culprits.get(i);
                IoThread t = v.culpritThreads.get(i);
                if (q.faultReason == null) {
                    q.faultReason = reason; // its completions no longer touch that memory
                }
                t.quarantine(q, reason);
                report.append(' ').append(t.roleName()).append(" queue ").append(q.index);
            }
        }
        landed.report(report.toString());
        return true;
    }
}
