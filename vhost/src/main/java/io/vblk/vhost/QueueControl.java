package io.vblk.vhost;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;

import io.vblk.engine.BlockDevice;
import io.vblk.engine.Interrupt;
import io.vblk.vring.QueueState;
import io.vblk.hostmem.DirtyLog;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.vring.AvailRingDescriptor;
import io.vblk.vring.UsedRingDescriptor;

/**
 * Applies a frontend's ring and memory set-up to the {@link BlockDevice}: starts a ring when it
 * has everything it needs, stops and drains it, and wraps every change the device only accepts
 * while queues are stopped (features, memory table, ring addresses) in stop, change, resume.
 *
 * <p>A ring resumes at its saved available index and takes its used index from {@code used.idx}
 * in guest memory ({@link QueueState#USED_FROM_RING}): after a stop they are equal, and after a
 * backend restart the frontend rewinds its available index to {@code used.idx} (facts.md), so
 * starting from anything else would skip or repeat used entries.
 *
 * <p>With an inflight buffer (INFLIGHT_SHMFD) the first start after SET_INFLIGHT_FD recovers
 * from the ring's region instead ({@link InflightRecovery}): the requests a previous backend
 * left in flight are resubmitted first, the ring resumes past them, and the region tracks the
 * queue's requests from then on.
 */
final class QueueControl {
    private final BlockDevice device;
    private final FrontendState state;
    private final QueueErrors errors;
    private final KickPoller poller;
    private final Log log;
    private final String who;
    /** Whether a ring of this frontend ever started (for the disconnect line; its handler thread only). */
    private boolean everStarted;
    /** Where {@link #ringIndex} reads a ring index to. */
    private final NativeBuffer indexBuffer = new NativeBuffer(Long.BYTES);

    /** The image's hand-over between two backends in a migration, or null (nothing to hand over). */
    private final HandOver activation;
    /**
     * Whether a ring's start was refused because the image could not be activated (another
     * backend holds its locks): {@link #tick} retries it, so the ring starts when the holder
     * goes, not only at the frontend's next SET_VRING_KICK. The refusal is logged once.
     */
    private boolean activationRefused;
    /** Rings whose start {@link #tick} found refused before the activation and logged (once each). */
    private final BitSet unaddressedLogged = new BitSet();
    /** The dirty log whose out-of-range marks {@link #tick} has reported, or null. */
    private DirtyLog rangeReported;
    /** Asks the session for {@link #tick} calls about once a second (its handler thread, under its turn lock). */
    private Runnable wantTicks = () -> { };

    QueueControl(BlockDevice device, FrontendState state, QueueErrors errors, KickPoller poller, Log log, String who) {
        this(device, state, errors, poller, log, who, null);
    }

    QueueControl(BlockDevice device, FrontendState state, QueueErrors errors, KickPoller poller, Log log, String who,
            HandOver activation) {
        this.activation = activation;
        this.device = device;
        this.state = state;
        this.errors = errors;
        this.poller = poller;
        this.log = log;
        this.who = who;
    }

    BlockDevice device() {
        return device;
    }

    /** Where {@link #tick} calls are asked for: the session's timer. */
    void onWantTicks(Runnable value) {
        wantTicks = value;
    }

    /**
     * The session's periodic check, on its control thread (never the data path), about once a
     * second while it returns true: retries the start of rings whose image activation was refused,
     * and reports at once the first mark that fell outside the dirty log the frontend sized (not
     * only when logging goes off). Returns whether it is still needed.
     */
    boolean tick() {
        if (activationRefused) {
            boolean waiting = false;
            for (Vring v : state.vrings) {
                if (v.running || !ready(v)) {
                    continue;
                }
                try {
                    startIfReady(v);
                } catch (ProtocolError e) {
                    if (activation != null && !activation.active()) {
                        // Refused before the activation (its rings are not in guest memory, which
                        // the frontend was told when it sent them): not waiting for the image.
                        if (!unaddressedLogged.get(v.index)) {
                            unaddressedLogged.set(v.index);
                            log.info(who + ": " + e.getMessage() + " (logged once)");
                        }
                        continue;
                    }
                    // Refused after the image came active (inflight region, an index that cannot
                    // be read, the device's start): the ring would sit dead with the connection
                    // open. As on the message path, its error eventfd is signalled; and as
                    // nobody can be answered, the session ends so that the frontend reconnects.
                    errors.signal(v.index);
                    throw ProtocolError.fatal(e.getMessage() + " (after its image came active at the retry)");
                }
                waiting |= !v.running;
            }
            // Nothing left waiting (started, or no longer ready: stopped, reset): no more retries.
            activationRefused &= waiting;
        }
        DirtyLog logging = device.dirtyLog();
        if (logging != null && logging != rangeReported && logging.outOfRange() > 0) {
            rangeReported = logging;
            log.info(who + ": dirty log: " + logging.outOfRange() + " mark(s) fell outside the log the frontend sized ("
                    + logging + "): pages written there are not logged, a migration may copy them stale");
        }
        return activationRefused || logging != null;
    }

    /** Whether {@code v} has everything it needs to run. */
    boolean ready(Vring v) {
        return v.num > 0 && v.addressed && v.kickReady && state.enabled(v) && state.memory.memory() != null;
    }

    /**
     * Starts {@code v} if it is ready and not running.
     *
     * @throws ProtocolError (rejected) when its rings are not inside guest memory or the device
     *         refuses their layout
     */
    void startIfReady(Vring v) {
        if (v.running || !ready(v)) {
            return;
        }
        GuestMemory memory = state.memory.memory();
        long desc = guestAddress(memory, v, "descriptor table", v.descUser);
        long avail = guestAddress(memory, v, "available ring", v.availUser);
        long used = guestAddress(memory, v, "used ring", v.usedUser);
        int q = v.index;
        if (!activateImage(q)) {
            return;
        }
        int nextAvail = state.inflight != null ? trackInflight(v, state.inflight, avail, used) : v.base;
        device.setQueueState(q, new QueueState(v.num, desc, avail, used, nextAvail, QueueState.USED_FROM_RING));
        device.setKick(q, v.kick);
        device.setInterrupt(q, interruptOf(v.call));
        device.setUsedRingLog(q, v.usedLogAddress);
        try {
            device.startQueue(q);
        } catch (IllegalStateException e) {
            if (device.isRunning(q)) {
                // A late guest-memory fault landed in the start command after it had marked the
                // queue running: stopped again, so that the device and this ring agree it does
                // not run (else GET_VRING_BASE found it running, "must be stopped to lift its
                // quarantine").
                surviveLateFault("stopping queue " + q + " after its start failed", () -> device.stopQueue(q));
            }
            throw ProtocolError.rejected("vring " + q + " cannot start: " + e.getMessage());
        }
        v.running = true;
        everStarted = true;
        v.recoverInflight = false;
        poller.poll(q, v.kick == null);
        log.info(String.format("%s: queue %d started: size %d, avail index %d, desc 0x%x avail 0x%x used 0x%x%s%s", who,
                q, v.num, nextAvail, desc, avail, used, v.kick == null ? ", polled" : "",
                state.inflight != null ? ", inflight tracked" : ""));
    }

    /**
     * The device starts (its first ring): an inactive image (a migration's destination, or a
     * source that handed over and resumes) takes the writer's locks first. Refused while another
     * backend still holds them: the ring does not start (its error eventfd is signalled and the
     * holder logged, once), so nothing is ever written unlocked; {@link #tick} tries again every
     * second, and so does the next SET_VRING_KICK.
     */
    private boolean activateImage(int q) {
        if (activation == null || activation.active()) {
            return true;
        }
        try {
            if (activation.activate()) {
                log.info(who + ": image " + activation.image() + (activation.locked() ? " active (writer's locks taken)"
                        : " active (nothing cached trusted; a network disk has no locks)") + " at the device's start");
            }
            activationRefused = false;
            return true;
        } catch (RuntimeException e) {
            if (!activationRefused) {
                log.info(who + ": vring " + q + " NOT started: the inactive image cannot be activated: " + e.getMessage()
                        + " (retried every second, logged once)");
                errors.signal(q);
            }
            activationRefused = true;
            wantTicks.run();
            return false;
        }
    }

    /**
     * Sets up queue {@code v}'s inflight tracking before it starts and returns the available
     * index to resume at. The first start after SET_INFLIGHT_FD recovers from the region and
     * queues the resubmissions; a restart after an internal stop (memory table, features) keeps
     * what the device has: its index, its tracker and any resubmissions not yet done.
     */
    private int trackInflight(Vring v, InflightBuffer inflight, long availGpa, long usedGpa) {
        int q = v.index;
        if (q >= inflight.numQueues()) {
            throw ProtocolError.rejected("vring " + q + " cannot start: the inflight buffer covers only "
                    + inflight.numQueues() + " queue(s)");
        }
        InflightRegion tracked = inflight.region(q);
        if (v.num > tracked.queueSize()) {
            // A restart keeps the region it was given: a ring grown since (SET_VRING_NUM without
            // a new SET_INFLIGHT_FD) would have heads the region cannot record, run untracked.
            throw ProtocolError.rejected("vring " + q + " cannot start: it has " + v.num
                    + " entries, its inflight region only " + tracked.queueSize());
        }
        if (!v.recoverInflight) {
            return v.base;
        }
        int usedIdx = ringIndex(v, "used", usedGpa + UsedRingDescriptor.IDX_OFFSET);
        int availIdx = ringIndex(v, "available", availGpa + AvailRingDescriptor.IDX_OFFSET);
        InflightRegion region = inflight.region(q);
        InflightRecovery.Result r;
        try {
            r = InflightRecovery.recover(region, v.num, usedIdx, availIdx, v.base);
        } catch (ProtocolError e) {
            throw ProtocolError.rejected("vring " + q + " cannot start: " + e.getMessage());
        }
        region.resume(r.nextCounter(), r.lastBatchHead());
        // Always, even empty: it replaces whatever an earlier start left undone.
        device.resubmitOnStart(q, r.heads());
        device.setInflightTracker(q, region);
        if (r.initialised()) {
            log.info(who + ": queue " + q + ": inflight region initialised");
        } else {
            log.info(who + ": queue " + q + ": inflight recovery: resubmitting " + r.heads().length + " request(s)"
                    + headList(r.heads()) + (r.lastBatchCleared() > 0 ? ", " + r.lastBatchCleared()
                    + " of the last batch were already completed" : "") + "; used.idx " + usedIdx
                    + ", avail.idx " + availIdx + ", resuming at avail index " + r.nextAvail()
                    + " (the frontend said " + v.base + ")");
        }
        return r.nextAvail();
    }

    /**
     * A 16-bit ring index in guest memory, read with pread(2) from the region's file rather than
     * through the mapping: a frontend that shrank the file under the mapping would make a load
     * fault (SIGBUS, which the JVM raises as an InternalError at some later point of this thread),
     * where pread just comes up short.
     */
    private int ringIndex(Vring v, String ring, long gpa) {
        for (MemoryTable.Region r : state.memory.regions()) {
            long offsetInRegion = gpa - r.guestAddress();
            if (Long.compareUnsigned(offsetInRegion, r.size()) >= 0
                    || Long.compareUnsigned(r.size() - offsetInRegion, Short.BYTES) < 0) {
                continue;
            }
            long rc = Native.result(Native.libc().pread(r.fd(), indexBuffer.address(), Short.BYTES,
                    r.mmapOffset() + offsetInRegion));
            if (rc != Short.BYTES) {
                throw ProtocolError.rejected(String.format("vring %d cannot start: its %s index at gpa 0x%x cannot be"
                        + " read from the memory file (%s)", v.index, ring, gpa,
                        rc < 0 ? Errno.describe((int) -rc) : "the file ends before it"));
            }
            return indexBuffer.buffer().getShort(0) & 0xFFFF;
        }
        throw ProtocolError.rejected(String.format("vring %d %s index at gpa 0x%x is not in guest memory", v.index, ring,
                gpa));
    }

    private static String headList(int[] heads) {
        if (heads.length == 0) {
            return "";
        }
        StringBuilder b = new StringBuilder(" (heads");
        int shown = Math.min(heads.length, 16);
        for (int i = 0; i < shown; i++) {
            b.append(' ').append(heads[i]);
        }
        return b.append(shown < heads.length ? " ...)" : ")").toString();
    }

    /**
     * Installs the inflight buffer of a SET_INFLIGHT_FD (rings stopped), and each ring recovers
     * from it at its next start. A new buffer replaces the old one, which the device lets go of
     * and which is then unmapped; the one already installed (QEMU sends the same buffer at
     * every start) stays mapped, its regions still in the device.
     */
    void installInflight(InflightBuffer buffer) {
        if (buffer != state.inflight) {
            dropInflight();
            state.inflight = buffer;
            log.info(who + ": inflight buffer: " + buffer);
        }
        for (Vring v : state.vrings) {
            v.recoverInflight = true;
        }
    }

    /** Stops inflight tracking (rings stopped): the device lets go of every region, then the buffer is unmapped. */
    void dropInflight() {
        InflightBuffer old = state.inflight;
        if (old == null) {
            return;
        }
        for (Vring v : state.vrings) {
            device.setInflightTracker(v.index, null);
            v.recoverInflight = false;
        }
        state.inflight = null;
        old.close();
    }

    private static long guestAddress(GuestMemory memory, Vring v, String what, long userAddress) {
        long gpa = memory.userToGuest(userAddress);
        if (gpa == -1) {
            throw ProtocolError.rejected(String.format("vring %d %s at 0x%x is in no memory region", v.index, what,
                    userAddress));
        }
        return gpa;
    }

    /** The interrupt a call eventfd stands for; no eventfd means the frontend polls. */
    static Interrupt interruptOf(EventFd call) {
        return call == null ? Interrupt.NONE : Interrupt.of(call);
    }

    /**
     * Stops {@code v} if it runs: drains its in-flight requests and records where it stopped.
     * Returns the next available index to process (the GET_VRING_BASE answer).
     */
    int stop(Vring v) {
        if (!v.running) {
            return v.base;
        }
        int q = v.index;
        poller.poll(q, false);
        QueueState stopped = device.stopQueue(q);
        v.running = false;
        if (stopped != null) {
            v.base = stopped.nextAvail();
        }
        String broken = device.brokenReason(q);
        log.info(who + ": queue " + q + " stopped at avail index " + v.base
                + (broken != null ? " (it was quarantined: " + broken + ")" : ""));
        releaseLogsIfQuiet();
        return v.base;
    }

    /**
     * Stops {@code v} for GET_VRING_BASE: drains it, then makes every write the device completed
     * durable before the answer goes out. The answer is where a migration's destination (or a
     * restarted backend) resumes, and it reads the image: it must find every write the guest
     * was told had completed.
     */
    int stopForHandOver(Vring v) {
        int base = stop(v);
        device.sync();
        if (activation != null && state.logAll() && !anyRunning()) {
            // A migration's source handing over: drained and durable, it lets the destination's
            // backend take the writer's locks; it takes them back at its next start (a failed
            // migration resumes here, or the guest comes back).
            try {
                if (activation.inactivate()) {
                    log.info(who + ": image " + activation.image() + (activation.locked()
                            ? " inactive (writer's locks dropped)" : " inactive (written back and flushed; a network disk"
                            + " has no locks)") + " after a stop with dirty logging on");
                }
            } catch (RuntimeException e) {
                log.info(who + ": image stays active, its locks could not be changed: " + e.getMessage());
            }
        }
        return base;
    }

    /** Whether a ring of this frontend ever started. */
    boolean everStarted() {
        return everStarted;
    }

    private boolean anyRunning() {
        for (Vring r : state.vrings) {
            if (r.running) {
                return true;
            }
        }
        return false;
    }

    /**
     * Points the device at the frontend's dirty log while VHOST_F_LOG_ALL is on and a log is
     * mapped, and away from it otherwise. Logging starts or stops at once, rings running.
     */
    void applyLogging() {
        DirtyLog wanted = state.logAll() && !LOGGING_DISABLED ? state.logs.log() : null;
        if (wanted == device.dirtyLog()) {
            return;
        }
        if (wanted == null) {
            device.stopDirtyLog();
            log.info(who + ": dirty logging off" + outOfRangeNote());
        } else if (LOGGING_DISABLED) {
            log.info(who + ": dirty logging requested, NOT done (VBLK_UNSAFE_NO_DIRTY_LOG=1)");
        } else {
            device.startDirtyLog(wanted);
            log.info(who + ": dirty logging on: " + state.logs);
            wantTicks.run(); // an out-of-range mark is reported at once
        }
    }

    /**
     * VBLK_UNSAFE_NO_DIRTY_LOG=1: offer logging but never log. Only for showing that the
     * migration test (scripts/e2e/migrate) catches a backend that does not log; it corrupts
     * migrated guests.
     */
    private static final boolean LOGGING_DISABLED = "1".equals(System.getenv("VBLK_UNSAFE_NO_DIRTY_LOG"));

    private String outOfRangeNote() {
        long n = state.logs.outOfRange();
        return n == 0 ? "" : " (" + n + " marks fell outside the log the frontend sized)";
    }

    /**
     * Unmaps the replaced logs, rings running or not: {@link #applyLogging} pointed the device
     * away from them, and once every data-plane thread has passed a round boundary (and the
     * completion thread the batch it was in) nothing can still be marking them.
     */
    void releaseReplacedLogs() {
        device.awaitDataPathPass();
        state.logs.releaseRetired();
    }

    /** Unmaps replaced logs once no ring runs: every stop drained the device, nothing holds them. */
    private void releaseLogsIfQuiet() {
        for (Vring r : state.vrings) {
            if (r.running) {
                return;
            }
        }
        state.logs.releaseRetired();
    }

    /** Sets {@code v}'s used-ring log address (SET_VRING_ADDR's VHOST_VRING_F_LOG), running or not. */
    void setUsedRingLog(Vring v, long logGuestAddress) {
        v.usedLogAddress = logGuestAddress;
        device.setUsedRingLog(v.index, logGuestAddress);
    }

    /** Stops every running ring; returns them, to resume with {@link #resume}. */
    List<Vring> stopRunning() {
        List<Vring> stopped = new ArrayList<>();
        for (Vring v : state.vrings) {
            if (v.running) {
                stop(v);
                stopped.add(v);
            }
        }
        return stopped;
    }

    /**
     * Starts {@code rings} again after a change. A ring that cannot resume (its memory went away)
     * is reported on its error eventfd and logged; the others resume regardless. Returns the
     * reasons of the failures, empty when all resumed.
     */
    List<String> resume(List<Vring> rings) {
        List<String> failures = new ArrayList<>();
        for (Vring v : rings) {
            try {
                startIfReady(v);
            } catch (ProtocolError e) {
                failures.add(e.getMessage());
                log.info(who + ": " + e.getMessage());
                errors.signal(v.index);
            }
        }
        return failures;
    }

    /**
     * Applies negotiated features: the device renegotiates only with its queues stopped. The same
     * features again (QEMU repeats SET_FEATURES, and switches VHOST_F_LOG_ALL, which is not the
     * device's, with rings running) leave the rings alone.
     */
    void negotiate(long features) {
        if (features == device.negotiatedFeatures()) {
            return;
        }
        List<Vring> running = stopRunning();
        device.negotiate(features);
        resume(running);
    }

    /**
     * Installs a new memory table: running rings are drained, the device switches tables, the old
     * one is unmapped (nothing can use it any more), and the rings resume on the new one.
     */
    void installMemory(List<MemoryTable.Region> regions, GuestMemory newMemory) {
        List<Vring> running = stopRunning();
        device.setMemory(newMemory);
        state.memory.replace(regions, newMemory);
        log.info(who + ": memory table " + regions + "; fixed buffers: " + device.fixedBuffers());
        resume(running);
    }

    /** Replaces {@code v}'s kick eventfd (null: polled), closing the old one once the device let go of it. */
    void replaceKick(Vring v, EventFd kick) {
        EventFd old = v.kick;
        device.setKick(v.index, kick);
        v.kick = kick;
        if (v.running) {
            poller.poll(v.index, kick == null);
        }
        if (old != null && old != kick) {
            old.close();
        }
    }

    /** Replaces {@code v}'s call eventfd (null: no interrupts), closing the old one once it is no longer signalled. */
    void replaceCall(Vring v, EventFd call) {
        EventFd old = v.call;
        device.setInterrupt(v.index, interruptOf(call));
        v.call = call;
        if (old != null && old != call) {
            old.close();
        }
    }

    /** Replaces queue {@code q}'s error eventfd, closing the old one. */
    void replaceError(int q, EventFd err) {
        EventFd old = errors.replace(q, err);
        if (old != null && old != err) {
            old.close();
        }
    }

    /**
     * Resets the device (RESET_OWNER, RESET_DEVICE): every ring is drained and forgets its
     * set-up and kick, features go back to the offer, the inflight buffer is dropped (QEMU hands
     * out a new one after a reset). Memory and notifiers stay.
     */
    void resetDevice() {
        stopRunning();
        device.reset();
        // The rings start over: what the buffer says about them no longer applies.
        dropInflight();
        for (Vring v : state.vrings) {
            replaceKick(v, null);
            v.forgetSetup();
        }
        state.ackedFeatures = 0;
        // VHOST_F_LOG_ALL went with the features; the log itself stays mapped for the next start.
        applyLogging();
    }

    /**
     * Teardown's end after the device closed under it: the frontend's descriptors go without the
     * device. close() marks the device closed before its I/O threads end: until they have (and
     * their back ends closed drained, or were released by aio's reaper once the kernel finished
     * what they left), they may still signal these eventfds or write the inflight region, so
     * closing them is left to {@code later}, which the caller runs once the device is quiesced
     * (review 10c).
     */
    private void releaseAfterDeviceClose(List<Runnable> later) {
        InflightBuffer inflight = state.inflight;
        state.inflight = null;
        if (inflight != null) {
            later.add(inflight::close);
        }
        for (Vring v : state.vrings) {
            if (v.kick != null) {
                later.add(v.kick::close);
                v.kick = null;
            }
            if (v.call != null) {
                later.add(v.call::close);
                v.call = null;
            }
            replaceError(v.index, null);
            v.running = false;
            v.forgetSetup();
        }
    }

    /**
     * Ends the connection's use of the device: drains and stops every ring, resets the device,
     * and closes every descriptor the frontend sent, its memory and its inflight buffer. Safe
     * after any failure.
     */
    void teardown() {
        for (Vring v : state.vrings) {
            if (v.running && v.kick != null) {
                // The connection is ending, so a spurious kick is harmless: the ring takes what
                // the frontend made available without kicking, and the stop below drains it all.
                // (Not to free a blocked I/O thread: kick eventfds are never read, EpollWait
                // watches them edge-triggered, and the stop command wakes the thread itself.)
                v.kick.signal();
            }
        }
        boolean closedUnderUs = false;
        List<Runnable> later = new ArrayList<>();
        try {
            // Each device step survives a late guest-memory fault landing in it (below), so a
            // frontend that truncated its memory cannot make the teardown skip the rest.
            surviveLateFault("stopping the rings", this::stopRunning);
            surviveLateFault("resetting the device", device::reset);
            surviveLateFault("dropping the inflight buffer", this::dropInflight);
            for (Vring v : state.vrings) {
                surviveLateFault("closing queue " + v.index + "'s kick", () -> replaceKick(v, null));
                surviveLateFault("closing queue " + v.index + "'s call", () -> replaceCall(v, null));
                replaceError(v.index, null);
                v.forgetSetup();
            }
            // The device lets go of the table (and its fixed-buffer pins) before it is unmapped.
            surviveLateFault("letting the device go of the memory table", device::clearMemory);
        } catch (IllegalStateException e) {
            if (!device.isClosed()) {
                throw e;
            }
            // The server closed the device meanwhile (its close stopped waiting for this
            // teardown, or gave up on a drain the back end never finished). Its I/O threads
            // may still be in a last round, or have ended with requests still with the kernel:
            // what they may still write or signal goes only once the device is quiesced.
            closedUnderUs = true;
            releaseAfterDeviceClose(later);
        }
        boolean stopLog = !closedUnderUs;
        later.add(() -> releaseMemory(stopLog));
        if (closedUnderUs && !device.quiesced()) {
            // A back end closed with operations still with the kernel (or an I/O thread's last
            // round has not ended): the kernel may yet write into the guest's pages, so the
            // table stays mapped rather than let a later mapping at its address take those
            // writes, until the last such back end is released (aio's reaper saw the kernel
            // finish) or the round ended. A back end kept for the JVM's life keeps it for good.
            log.info(who + ": the device closed without draining: the guest memory table stays mapped until the kernel"
                    + " has finished what it holds");
            device.whenQuiesced(() -> {
                runAll(later);
                log.info(who + ": the kernel finished what the undrained device left: the guest memory table is unmapped");
            });
            return;
        }
        runAll(later);
    }

    /** How often a teardown step is tried again after a late guest-memory fault landed in it. */
    private static final int LATE_FAULT_RETRIES = 4;

    /**
     * Runs a teardown step that commands the device, again when a guest-memory fault landed in
     * it. A frontend that shrank its memory file under the mapping makes the I/O thread's loads
     * fault (SIGBUS), which Java 17 raises as an InternalError later, at a safepoint of whatever
     * that thread runs next: possibly one of this step's commands, which then fails although it
     * touched no guest memory itself (engine GuestFaults; the data path attributes such faults
     * by evidence and goes on). The engine's one-shot commands already run again after such a
     * fault (BlockDevice.run, up to 4 times); this covers what gets past that. Each fault is
     * delivered once, and the steps are idempotent
     * (stopping a stopped queue, a reset, a cleared table), so the retry completes the step;
     * the teardown must, or it would leave the device running on memory about to be unmapped, or
     * leave that memory, the kicks and calls mapped and open for good.
     */
    private void surviveLateFault(String step, Runnable action) {
        for (int attempt = 0;; attempt++) {
            try {
                action.run();
                return;
            } catch (RuntimeException e) {
                if (attempt >= LATE_FAULT_RETRIES || !isLateMemoryFault(e) || device.isClosed()) {
                    throw e;
                }
                log.info(who + ": a late guest memory fault landed while " + step + " (" + e + "): done again");
            }
        }
    }

    /** Whether {@code e} is a device command failed by the JVM's guest-memory fault (see engine GuestFaults). */
    static boolean isLateMemoryFault(RuntimeException e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof InternalError && String.valueOf(t.getMessage()).contains("unsafe memory access")) {
                return true;
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return false;
    }

    /** Runs each of {@code actions}, whatever the others did; the first failure is rethrown. */
    private static void runAll(List<Runnable> actions) {
        RuntimeException first = null;
        for (Runnable action : actions) {
            try {
                action.run();
            } catch (RuntimeException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    /**
     * Unmaps the guest memory table and the dirty log and closes the log's eventfd: nothing of
     * the device can touch them any more. {@code stopLog}: the device still runs (it was not
     * closed under the teardown), and its dirty log is stopped too.
     */
    private void releaseMemory(boolean stopLog) {
        state.memory.close();
        if (stopLog) {
            device.stopDirtyLog();
        }
        long outside = state.logs.outOfRange();
        if (outside != 0) {
            log.info(who + ": " + outside + " dirty-log marks fell outside the log the frontend sized");
        }
        state.logs.close();
        if (state.logFd != null) {
            state.logFd.close();
            state.logFd = null;
        }
    }
}
