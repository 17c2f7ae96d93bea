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
 * never inlined or never compiled delivers it in compiled code; a safepoint does). It can even
 * come after the faulting queue has stopped, while the same I/O thread serves the next
 * frontend's queue or another device's. So the model does not try to place the fault: it
 * attributes it by evidence, and keeps the accounting exact wherever it lands:
 *
 * <ul>
 * <li><b>Attribution by evidence</b> ({@link #attribute}, {@link FaultEvidence}). When a
 *     memory fault is caught on an I/O thread, every memory table the devices on that OS thread
 *     use, and the last few they used (a frontend that has gone, a device detached from a shared
 *     thread), is asked whether it now maps past the end of its file, or its file changed size
 *     since it was mapped, or has holes nothing can fill (hostmem
 *     {@code GuestMemory.shrinkEvidence()}: fstat of a descriptor the table keeps per region,
 *     which changes nothing of the frontend's file; an inotify watch begun when the table was
 *     mapped, sys FileChangeWatch; a full size-limited file system, or hugetlbfs with no free
 *     huge page; a closed table answers what was true when it was unmapped, after which nothing
 *     of it can fault). The change is sticky because the JVM delivers the error late: a frontend
 *     that shrank its file and grew it back before the error was caught left no size evidence,
 *     and the queue where the error landed, another tenant's on a shared thread, paid (rev16c,
 *     GrownBackEvidenceTest). Nothing of this runs per request: watches begin when a table is
 *     mapped, tables are noted at queue start, and both are asked only on the fault path.
 *     <ul>
 *     <li>Live queues (running or stopping) whose table shows evidence are quarantined, with the
 *         evidence in the reason; the queue where the error landed is not, unless it is one of
 *         them.</li>
 *     <li>Evidence only on tables no live queue uses (a stopped or quarantined queue, a
 *         frontend that has gone): nothing live is quarantined.</li>
 *     <li>No table shows evidence (memory an embedder mapped itself; a hugetlbfs pool emptied
 *         and refilled around the fault; a bug): the queue where the error landed is
 *         quarantined, as before attribution existed (the catch-all: the thread's queues). Not
 *         made an "unplaced" fault that quarantines nobody: a queue whose own memory faults
 *         without evidence would then be spared and pop again for ever, and a later fault,
 *         landing anywhere, would be no better placed (SpentEvidenceAttackTest). (vhost's
 *         inflight buffers need no evidence: only buffers sealed against shrinking are
 *         mapped.)</li>
 *     </ul>
 *     Evidence attributes one fault: one shrink costs one late fault per thread, delivered
 *     once, while the evidence stays visible as long as the table is remembered. A later fault
 *     with only evidence that already attributed one (and no queue started on that table since)
 *     is handled as one without evidence; otherwise a queue whose own memory keeps faulting
 *     without evidence would be spared and pop again for ever (irev2 SpentEvidenceAttackTest).
 *     Each verdict is reported once to the owner ({@link DeviceListener#faultAttributed}; the
 *     daemon logs it).</li>
 * <li><b>A spared queue loses nothing.</b> The pop loop keeps, in locals, where it is: between
 *     requests, popping, parsing. A fault attributed elsewhere that lands there puts the chain
 *     back (next_avail, or the resubmit list, restored; a claimed request released) and it is
 *     popped again. Landing while a request is handed to the back end or the completion route
 *     (whether the back end took it cannot be known exactly), the queue is quarantined as
 *     before. Landing outside a pop loop (a reap, a submit, a command), the queues stay, but a
 *     completion may have been lost with the error: the thread turns suspect until its queues
 *     have nothing in flight, and a drain that meanwhile finds requests nothing can complete
 *     quarantines their queue then and gives them up (below).</li>
 * <li>Every request slot carries its stage ({@link BlkRequest#stage}): claimed by the I/O
 *     thread, or handed to the back end / completion path. After any exception on the I/O
 *     thread every slot still "claimed" is given back (or, spared, popped again) and its
 *     queue's in-flight count restored; a slot is never given back twice. The one caught while
 *     it was being handed on is held as handed instead (the back end may have queued its
 *     operation: the fault can land at the return from the prepare), until its completion or
 *     the quarantined queue's drain gives it up; and a request is counted in flight before it
 *     names its queue, so a fault inside the claim leaves the count high (given up at the
 *     drain), never low (a drain returning with a request in flight). So {@code stopQueue},
 *     {@code setMemory} and {@code close} always return.</li>
 * <li>Completion writes (status byte, used element, inflight region) and the used publish are
 *     guarded: a fault there marks the queue faulted ({@link DeviceQueue#faultReason}); the
 *     slot is still released; later completions of that queue skip guest memory; the I/O thread
 *     quarantines it at its next round. Not attributed: a completion half written cannot be
 *     redone safely (the used element may already count), so a late fault of other memory that
 *     lands exactly there still costs that queue a reset.</li>
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
 *     a quarantined queue (or of any queue of a suspect thread) therefore gives such requests
 *     up ({@link FaultRecovery#settleLost}): once the back end reports nothing in flight and nothing
 *     pending, their request slots go back to the pool, and so do the back end's own slots of
 *     those completions (aio {@code IoBackend.reclaimLostSlots}: with nothing in flight, every
 *     slot still taken is lost; io_uring, Linux AIO, the thread pool and the helper thread
 *     alike). They are counted {@link QueueCounters#LOST}, never completed, and the queue stays
 *     quarantined. Never while the back end still reports work: giving up on an operation that
 *     may really still be running would let the VMM unmap memory it is about to write (a JVM
 *     crash). The back ends keep that report exact whatever point the fault lands at: their
 *     in-flight counts are derived from the kernel's own indices (io_uring: SQ head consumed
 *     against CQ head taken) or from their hand-over queues' own counters, and their lists hand
 *     an operation on only after removing it, so a fault can lose a completion but neither hide
 *     an operation still running nor keep one counted that has finished.</li>
 * <li>Linux AIO counts itself what the kernel took (AIO shows no count), so an io_submit whose
 *     answer a late fault cut off (the kernel took part of a batch) would leave the untaken
 *     operations counted for ever, and their queue's drain waiting. The answer is recovered
 *     from the iocbs instead: the kernel writes each iocb's key as it takes it, so the leading
 *     iocbs with the key written are the taken ones; the rest are queued again and submitted
 *     (aio LinuxAioBackend). Recovery runs before anything else is queued or counted, and
 *     counts absolutely, so it is exact wherever in the bookkeeping the error landed. One case
 *     stays ambiguous and is resolved to the safe side: the kernel can refuse the last iocb it
 *     reached after writing its key (IOCB_CMD_FDSYNC on a file without fsync, the back end's
 *     first flush there; or the kernel's own ENOMEM). It is counted taken: its queue's drain
 *     then waits (a hang in that double coincidence, never a crash), because an operation the
 *     kernel may be running is never given up.</li>
 * <li>A fault delivered inside the I/O thread's publish into the dedicated completion ring,
 *     between the lite blocking strategy's flag and its notify, would leave the completion thread
 *     asleep with events published: its wait times out ({@link WaitStrategies}) and it wakes.</li>
 * <li>io_uring's close waits exactly for what the kernel owes (SQ head against CQ head).</li>
 * <li>A quarantined queue reports needs-reset through {@link DeviceListener#queueBroken} and
 *     stays quarantined until a reset ({@link BlockDevice#reset}, {@link
 *     BlockDevice#clearQuarantine}); other devices are unaffected.</li>
 * <li>Not done on purpose: sealing a frontend's memfd with F_SEAL_SHRINK. It would stop only
 *     memfds created with MFD_ALLOW_SEALING (not files, not hugetlbfs exhaustion), a seal can
 *     never be removed, so the daemon would permanently change a file the frontend owns (and
 *     may want to resize, e.g. after unplugging memory), and QEMU already seals its own memfds
 *     where it can. The evidence covers every file kind without touching any.</li>
 * </ul>
 *
 * <p>Tested point by point, deterministically, by FaultSeamTest: the same InternalError is thrown
 * at exactly the point through {@link io.vblk.sys.FaultPoints} (pop, parse, bounce copy in and
 * back) or a throwing {@link InflightTracker} (inflight-region write, completion write, used
 * publish); no file shrank there, so the queue where it lands is quarantined. LateFaultAttributionTest
 * truncates one device's memfd for real and throws the error while the thread serves another
 * device (in its pop loop, after its submit, in its reap) or the next memory table of the same
 * device; vhost LateFaultNextFrontendTest does the latter through the protocol. FaultPointTest
 * truncates a real memfd instead, at every point, cold and hot; it cannot choose where Java 17
 * delivers the error, and checks that wherever it lands the model holds. aio
 * LateFaultAccountingTest throws at the back ends' own worst points (right after the submit
 * call, right after a completion is taken, Linux AIO's partly taken batch) and checks the lost
 * slots come back.
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
            landed.faults().report("guest memory fault on I/O thread " + landed.roleName() + " with no evidence of a file shorter than"
                    + " its mapping: quarantined where the JVM delivered it (" + e.getMessage() + ")");
            return false;
        }
        for (int i = 0; i < v.evidenceTables.size(); i++) {
            IoThread owner = v.evidenceOwners.get(i);
            (owner != null ? owner : landed).evidence().spend(v.evidenceTables.get(i));
        }
        if (!v.fresh) {
            // Every table showing evidence already attributed a fault, which one shrink causes
            // once: this one is not its (a queue's own memory faulting without evidence, again
            // and again). Live culprits still go; the queue where it landed is not spared.
            String reason = "guest memory fault: " + v.liveEvidence + " (" + e + ")";
            for (int i = 0; i < v.culprits.size(); i++) {
                DeviceQueue q = v.culprits.get(i);
                if (q.faultReason == null) {
                    q.faultReason = reason; // its completions no longer touch that memory
                }
                v.culpritThreads.get(i).faults().quarantine(q, reason);
            }
            landed.faults().report("guest memory fault on I/O thread " + landed.roleName() + " with only evidence that already"
                    + " attributed a fault (" + (v.liveEvidence != null ? v.liveEvidence : v.staleEvidence)
                    + "): quarantined where the JVM delivered it (" + e.getMessage() + ")");
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
                t.faults().quarantine(q, reason);
                report.append(' ').append(t.roleName()).append(" queue ").append(q.index);
            }
        }
        landed.faults().report(report.toString());
        return true;
    }
}
