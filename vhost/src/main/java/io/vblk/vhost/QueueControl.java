package io.vblk.vhost;

import java.util.ArrayList;
import java.util.List;

import io.vblk.engine.BlockDevice;
import io.vblk.engine.Interrupt;
import io.vblk.engine.QueueState;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;

/**
 * Applies a frontend's ring and memory set-up to the {@link BlockDevice}: starts a ring when it
 * has everything it needs, stops and drains it, and wraps every change the device only accepts
 * while queues are stopped (features, memory table, ring addresses) in stop, change, resume.
 *
 * <p>A ring resumes at its saved available index and takes its used index from {@code used.idx}
 * in guest memory ({@link QueueState#USED_FROM_RING}): after a stop they are equal, and after a
 * backend restart the frontend rewinds its available index to {@code used.idx} (facts.md), so
 * starting from anything else would skip or repeat used entries.
 */
final class QueueControl {
    private final BlockDevice device;
    private final FrontendState state;
    private final QueueErrors errors;
    private final KickPoller poller;
    private final Log log;
    private final String who;

    QueueControl(BlockDevice device, FrontendState state, QueueErrors errors, KickPoller poller, Log log, String who) {
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
        device.setQueueState(q, new QueueState(v.num, desc, avail, used, v.base, QueueState.USED_FROM_RING));
        device.setKick(q, v.kick);
        device.setInterrupt(q, interruptOf(v.call));
        try {
            device.startQueue(q);
        } catch (IllegalStateException e) {
            throw ProtocolError.rejected("vring " + q + " cannot start: " + e.getMessage());
        }
        v.running = true;
        poller.poll(q, v.kick == null);
        log.info(String.format("%s: queue %d started: size %d, avail index %d, desc 0x%x avail 0x%x used 0x%x%s", who, q,
                v.num, v.base, desc, avail, used, v.kick == null ? ", polled" : ""));
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
        return v.base;
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

    /** Applies negotiated features: the device renegotiates only with its queues stopped. */
    void negotiate(long features) {
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
        log.info(who + ": memory table " + regions);
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
     * set-up and kick, features go back to the offer. Memory and notifiers stay.
     */
    void resetDevice() {
        stopRunning();
        device.reset();
        for (Vring v : state.vrings) {
            replaceKick(v, null);
            v.forgetSetup();
        }
        state.ackedFeatures = 0;
    }

    /**
     * Ends the connection's use of the device: drains and stops every ring, resets the device,
     * and closes every descriptor the frontend sent and its memory. Safe after any failure.
     */
    void teardown() {
        for (Vring v : state.vrings) {
            if (v.running && v.kick != null) {
                // The frontend is gone, so a spurious kick is harmless; it frees an I/O thread
                // that may be blocked reading a kick eventfd the frontend emptied itself (the
                // description is shared, and blocking is the frontend's choice).
                v.kick.signal();
            }
        }
        stopRunning();
        device.reset();
        for (Vring v : state.vrings) {
            replaceKick(v, null);
            replaceCall(v, null);
            replaceError(v.index, null);
            v.forgetSetup();
        }
        state.memory.close();
    }
}
