package io.vblk.engine;

import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.HdrHistogram.Histogram;
import org.agrona.concurrent.AtomicBuffer;

import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.RawDriver;
import io.vblk.hostmem.DirtyLog;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.vring.QueueState;

/**
 * A virtio-blk device data plane: the embedding API. A VMM (or the vhost-user backend) builds
 * one per disk, hands it guest memory and each queue's ring layout, kick and interrupt, and
 * drives its lifecycle; the device's I/O threads do everything per request.
 *
 * <pre>{@code
 * BlockDevice dev = BlockDevice.builder(BlkConfig.builder(image.sizeBytes()).build(),
 *                                       BackendFactory.of(BackendKind.IO_URING, image))
 *         .memory(guestMemory).build();
 * dev.negotiate(driverFeatures);
 * dev.configureQueue(0, 256, descGpa, availGpa, usedGpa);
 * dev.setInterrupt(0, Interrupt.of(irqfd));
 * dev.startQueue(0);
 * ... dev.kick(0) whenever the guest notifies queue 0 ...
 * QueueState resumeFrom = dev.stopQueue(0);   // drains in-flight requests first
 * dev.close();
 * }</pre>
 *
 * <p>Control methods (everything but {@link #kick(int)} and the readers of counters and
 * latency) are for one control thread at a time; they block until the I/O thread has applied
 * them. Nothing a guest writes into its rings makes them throw: a corrupt ring quarantines its
 * queue and is reported to the {@link DeviceListener}.
 *
 * <p>Rules an embedder keeps (each is checked, none can crash the process):
 * <ul>
 * <li>Never call a control method from an {@link Interrupt} or {@link DeviceListener} callback:
 *     those run on the device's data-plane threads, which the call would wait for; it throws
 *     {@link IllegalStateException} there. Hand it to another thread.
 * <li>After {@link #close()} every control method and {@link #kick} throws
 *     {@link IllegalStateException} ("device closed"); the readers (counters, state) still answer.
 * <li>Descriptors handed over ({@link #setKick}, {@link Interrupt#of}) are duplicated: the caller
 *     may close its own as soon as the call returns.
 * <li>The {@link GuestMemory} may be closed at any time: the device is attached to it, so it stays
 *     mapped until the device let go (closed and quiesced, or given another table).
 * <li>Run the JVM with {@code --add-exports java.base/jdk.internal.misc=ALL-UNNAMED} (see
 *     {@code scripts/jvm-flags}).
 * </ul>
 */
public final class BlockDevice implements AutoCloseable {
    /** {@link #setUsedRingLog}: log used-ring writes at the ring's own guest address (the default). */
    public static final long USED_LOG_AT_RING = -1;
    /** {@link #setUsedRingLog}: do not log used-ring writes (vhost-user without VHOST_VRING_F_LOG). */
    public static final long USED_LOG_OFF = -2;

    private final DeviceModel model;
    private final BackendFactory backends;
    /** The block drivers' factory when the disk is served in a format other than raw, else null. */
    private final DriverFactory drivers;
    /** The dirty log in force, or null (the usual case). */
    private volatile DirtyLog dirtyLog;
    private final Tuning tuning;
    private final DeviceListener listener;
    private final DeviceQueue[] queues;
    private final IoThread[] threads;
    private final IoThread[] threadOfQueue;
    /** Null when the device was built without limits and without {@code Tuning.adjustableLimits}. */
    private final Throttle throttle;
    private volatile GuestMemory memory;
    /** Per I/O thread: what its driver has registered as fixed buffers, or why nothing (control thread). */
    private final String[] bufferRegistration;
    private final GuestBufferRegistration registration;
    private volatile boolean closed;
    private final String name;

    private BlockDevice(Builder b) {
        this.name = b.name;
        this.model = new DeviceModel(b.config);
        this.tuning = b.tuning;
        this.listener = b.listener;
        this.memory = b.memory;
        this.backends = b.backends;
        this.drivers = b.drivers;
        int numQueues = b.config.numQueues();
        int maxChainSegments = b.config.queueSize() + Math.max(1, b.config.segMax());
        queues = new DeviceQueue[numQueues];
        for (int q = 0; q < numQueues; q++) {
            queues[q] = new DeviceQueue(q, maxChainSegments);
        }
        throttle = tuning.adjustableLimits() ? new Throttle(tuning.iopsLimit(), tuning.bytesPerSecondLimit(), tuning.burstMs())
                : Throttle.of(tuning.iopsLimit(), tuning.bytesPerSecondLimit(), tuning.burstMs());
        SharedIoThread[] shared = b.ioThreads;
        if (shared != null && tuning.threadingMode() != ThreadingMode.SHARED) {
            throw new IllegalArgumentException("shared I/O threads complete requests themselves: ThreadingMode.SHARED, not "
                    + tuning.threadingMode());
        }
        int threadCount = shared != null ? Math.min(shared.length, numQueues) : tuning.threadCount(numQueues);
        threads = new IoThread[threadCount];
        threadOfQueue = new IoThread[numQueues];
        if (memory != null) {
            memory.attach(this); // unmapped only once this device let go of it (GuestMemory.close)
        }
        try {
            for (int t = 0; t < threadCount; t++) {
                DeviceQueue[] mine = queuesOf(t, numQueues, shared == null ? 0 : threadCount);
                if (mine.length == 0) {
                    throw new IllegalArgumentException("I/O thread " + t + " has no queue in mapping " + tuning);
                }
                // A DISCARD or WRITE_ZEROES request takes one back-end slot per range segment, all
                // at once, so it waits until that many are free (RequestDispatcher): a depth below
                // it would never serve it, and its queue would wait for ever.
                int reserve = Math.max(1, model.maxSegmentsPerRange());
                int depth = tuning.backendDepth() > 0 ? tuning.backendDepth()
                        : Math.max(reserve, Math.min(4096, mine.length * b.config.queueSize()));
                if (depth < reserve) {
                    throw new IllegalArgumentException("backend depth " + depth + " is below the range segments per request ("
                            + reserve + ", maxRangeSegments): raise the depth or lower maxRangeSegments");
                }
                BlockDriver driver = b.openDriver(depth);
                try {
                    b.checkDisk(driver);
                } catch (RuntimeException e) {
                    driver.close();
                    throw e;
                }
                if (driver.depth() < reserve) {
                    driver.close();
                    throw new IllegalArgumentException("the " + driver.format() + " driver's depth " + driver.depth()
                            + " is below the range segments per request (" + reserve + ", maxRangeSegments)");
                }
                threads[t] = new IoThread(t, model, tuning, throttle, b.listener, mine, driver);
                for (DeviceQueue q : mine) {
                    threadOfQueue[q.index] = threads[t];
                }
            }
        } catch (RuntimeException e) {
            for (IoThread t : threads) {
                if (t != null) {
                    t.shutdown();
                }
            }
            if (memory != null) {
                memory.detach(this);
            }
            throw e;
        }
        for (IoThread t : threads) {
            if (shared != null) {
                t.startOn(shared[t.id()]);
            } else {
                t.start(b.name + "-io" + t.id());
            }
        }
        bufferRegistration = new String[threadCount];
        registration = new GuestBufferRegistration(tuning.fixedBuffers(), tuning.fixedBuffers().processLimitBytes());
        java.util.Arrays.fill(bufferRegistration, "none (no guest memory)");
        if (memory != null) {
            try {
                registerBuffers(memory);
            } catch (RuntimeException e) {
                for (IoThread t : threads) {
                    t.shutdown();
                }
                registration.release();
                memory.detach(this);
                throw e;
            }
        }
    }

    /** The I/O thread of queue {@code q}: the tuning's mapping, or round robin over shared threads. */
    private int threadOf(int q, int sharedCount) {
        return sharedCount > 0 ? q % sharedCount : tuning.threadOf(q);
    }

    private DeviceQueue[] queuesOf(int thread, int numQueues, int sharedCount) {
        int count = 0;
        for (int q = 0; q < numQueues; q++) {
            if (threadOf(q, sharedCount) == thread) {
                count++;
            }
        }
        DeviceQueue[] mine = new DeviceQueue[count];
        int i = 0;
        for (int q = 0; q < numQueues; q++) {
            if (threadOf(q, sharedCount) == thread) {
                mine[i++] = queues[q];
            }
        }
        return mine;
    }

    /**
     * A builder for a device with {@code config} whose I/O goes through back ends from
     * {@code backends}.
     */
    public static Builder builder(BlkConfig config, BackendFactory backends) {
        return new Builder(config, backends);
    }

    // ------------------------------------------------------------ identity and features

    /** What the device offers. */
    public BlkConfig config() {
        return model.config();
    }

    /** The virtio_blk_config bytes the driver reads. */
    public byte[] configSpace() {
        return model.config().configSpace();
    }

    /** The tuning the device runs with. */
    public Tuning tuning() {
        return tuning;
    }

    /**
     * Accepts the driver's features; queues must be stopped. Bits the device did not offer
     * ({@link BlkConfig#offeredFeatures()}) are dropped, not refused: the VMM checks the driver's
     * acked set against the offer (virtio 1.2 3.1.1: a driver must not accept a feature not
     * offered) and fails FEATURES_OK itself if it wants to.
     *
     * <p>Until the first call, and again after {@link #reset()}, every offered feature is in
     * effect, as if the driver had accepted the whole offer. Kept so (rather than none) because
     * the engine's and vhost's tests and tools drive devices that way without a negotiation
     * step, and a silent fall-back to no EVENT_IDX/indirect would change what they measure; a
     * VMM calls this at FEATURES_OK, before any {@link #startQueue}, so the default never
     * reaches a guest.
     */
    public void negotiate(long driverFeatures) {
        requireOpen();
        requireAllStopped("negotiate features");
        model.negotiate(driverFeatures);
    }

    /** The features in effect: the last {@link #negotiate} result, or the whole offer before one (see there). */
    public long negotiatedFeatures() {
        return model.negotiatedFeatures();
    }

    // ------------------------------------------------------------ memory and queue set-up

    /**
     * Installs a new guest memory table. Running queues are drained, moved onto the new table
     * and resumed where they stopped; quarantined queues are drained too and stay quarantined.
     * The caller may unmap the old table when this returns: nothing completes into it afterwards.
     */
    public void setMemory(GuestMemory newMemory) {
        requireOpen();
        Objects.requireNonNull(newMemory, "memory");
        requireNotDataPlane("setMemory");
        newMemory.attach(this); // throws for a closed table, before anything changed
        GuestMemory old = memory;
        boolean[] wasRunning = new boolean[queues.length];
        try {
            for (DeviceQueue q : queues) {
                if (q.state == QueueLifecycle.RUNNING) {
                    wasRunning[q.index] = true;
                    stopQueue(q.index);
                } else {
                    // A quarantined queue can still have reads in flight whose completion writes
                    // into the old table (issue 10, bug 4): wait for them, changing nothing else.
                    drain(q);
                }
            }
        } catch (RuntimeException | Error e) {
            newMemory.detach(this); // not installed: the old table stays the device's
            throw e;
        }
        memory = newMemory;
        // Nothing is in flight: the old table's registration goes (its pages unpinned) before
        // the caller may unmap it, and the new one is registered before any queue runs on it.
        registerBuffers(newMemory);
        if (old != null) {
            old.detach(this); // nothing is in flight on it: its owner's close may unmap it now
        }
        for (DeviceQueue q : queues) {
            if (wasRunning[q.index]) {
                startQueue(q.index);
            }
        }
    }

    /**
     * What each I/O thread's back end has registered of the guest memory as fixed buffers, or
     * why nothing ({@link Tuning#fixedBuffers()}), one line per thread: for logs and tests.
     */
    public String fixedBuffers() {
        return String.join("; ", bufferRegistration);
    }

    /** Registers {@code mem} with every I/O thread's driver (see {@link GuestBufferRegistration}). */
    private void registerBuffers(GuestMemory mem) {
        registration.apply(threads, mem, bufferRegistration);
    }

    /**
     * Forgets the guest memory table (a frontend went away): every queue must be stopped; the
     * fixed-buffer registrations are dropped, so the table's pages are no longer pinned, and the
     * caller may unmap it. A queue starts again only after {@link #setMemory}.
     */
    public void clearMemory() {
        requireOpen();
        requireAllStopped("forget the guest memory");
        for (DeviceQueue q : queues) {
            drain(q);
        }
        GuestMemory old = memory;
        memory = null;
        registerBuffers(null);
        if (old != null) {
            old.detach(this);
        }
    }

    /** The guest memory table in use, or null before one was set. */
    public GuestMemory memory() {
        return memory;
    }

    /** Sets queue {@code q}'s ring layout (guest-physical addresses), resuming at index 0. */
    public void configureQueue(int q, int size, long descAddress, long availAddress, long usedAddress) {
        requireOpen();
        setQueueState(q, new QueueState(size, descAddress, availAddress, usedAddress, 0, 0));
    }

    /**
     * Imports a queue's state (layout and indices), e.g. exported by another engine.
     *
     * @throws IllegalArgumentException when the ring is larger than {@link BlkConfig#queueSize()}
     */
    public void setQueueState(int q, QueueState state) {
        requireOpen();
        DeviceQueue queue = queue(q);
        requireStopped(queue, "set its state");
        Objects.requireNonNull(state, "state");
        if (state.size() > model.config().queueSize()) {
            throw new IllegalArgumentException("queue " + q + " size " + state.size() + " is above the config's queueSize "
                    + model.config().queueSize());
        }
        queue.layout = state;
    }

    /**
     * Exports queue {@code q}'s state. Exact when the queue is stopped (see {@link #stopQueue}); a
     * running queue's indices move on.
     */
    public QueueState queueState(int q) {
        DeviceQueue queue = queue(q);
        QueueState layout = queue.layout;
        if (layout == null) {
            return null;
        }
        if (queue.state == QueueLifecycle.STOPPED && !queue.ring.active()) {
            return layout;
        }
        return layout.withNextAvail(queue.ring.nextAvail()).withNextUsed(queue.ring.nextUsed());
    }

    /**
     * Sets the eventfd the I/O thread sleeps on for queue {@code q}'s kicks (null: none). The
     * device watches and reads a duplicate of {@code kick} of its own (closed when replaced, or
     * once the device is closed and quiesced): the caller may close {@code kick} whenever it likes
     * after this returns, and the device never reads a descriptor number it does not own.
     */
    public void setKick(int q, EventFd kick) {
        DeviceQueue queue = queue(q);
        requireOpen();
        EventFd copy = kick == null ? null : kick.duplicate();
        EventFd[] previous = new EventFd[1];
        boolean[] installed = new boolean[1];
        try {
            run(queue, t -> {
                // Re-run from the top after a late fault (see run()), so each step checks what is
                // done: the swap happens once, and the watch (which may be repeated) always ends it.
                if (!installed[0]) {
                    boolean watching = queue.state == QueueLifecycle.RUNNING;
                    if (queue.kick != copy) {
                        if (watching) {
                            t.unwatchKick(queue);
                        }
                        io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SWAPPING); // tests only: see FaultPoints
                        previous[0] = queue.kick;
                        queue.kick = copy;
                    }
                    io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SWAPPED); // tests only: see FaultPoints
                    if (watching) {
                        t.watchKick(queue);
                    }
                    io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SWAP_ENDING); // tests only: see FaultPoints
                    installed[0] = true;
                }
                return null;
            });
        } catch (RuntimeException | Error e) {
            if (queue.kick != copy && copy != null) {
                copy.close(); // never installed
            }
            throw e;
        }
        if (previous[0] != null) {
            previous[0].close(); // the device's own copy: the I/O thread no longer watches it
        }
    }

    /**
     * Sets queue {@code q}'s interrupt. When this returns the old one will not be signalled again,
     * so its eventfd may be closed. An {@link Interrupt#of(EventFd)} is signalled through a
     * duplicate of its descriptor that the device owns (see {@link Interrupt}): its eventfd may
     * be closed as soon as this returns.
     */
    public void setInterrupt(int q, Interrupt interrupt) {
        DeviceQueue queue = queue(q);
        Objects.requireNonNull(interrupt, "interrupt");
        requireOpen();
        requireNotDataPlane("setInterrupt");
        Interrupt installing = interrupt instanceof EventFdInterrupt e ? e.bind() : interrupt;
        Interrupt[] previous = new Interrupt[1];
        CompletableFuture<Void> done = new CompletableFuture<>();
        threadOfQueue[q].submitCommand(new InboxEvent.Command() {
            private long fence = Long.MIN_VALUE;

            @Override
            public boolean run(IoThread t) {
                if (done.isDone()) {
                    return true; // a late fault landed after it had completed: not again (see run())
                }
                if (queue.interrupt != installing) {
                    // Once, even when a late fault re-runs this before the fence is taken (the
                    // installed copy must never become "previous" and be closed).
                    io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SWAPPING); // tests only: see FaultPoints
                    previous[0] = queue.interrupt;
                    queue.interrupt = installing;
                }
                io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SWAPPED); // tests only: see FaultPoints
                if (fence == Long.MIN_VALUE) {
                    // Dedicated mode signals on the completion thread: wait until it has left
                    // every batch that may still hold the old interrupt (issue 10, bug 5).
                    fence = t.completionFence();
                }
                io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SWAP_ENDING); // tests only: see FaultPoints
                if (!t.completionPassed(fence)) {
                    return false;
                }
                done.complete(null);
                return true;
            }

            @Override
            public void abandon(Throwable cause) {
                if (queue.interrupt != installing) {
                    closeOwned(installing); // never installed
                }
                done.completeExceptionally(cause);
            }
        });
        await(done);
        closeOwned(previous[0]); // past the fence: nothing signals it any more
    }

    /** Closes the device's own copy of an embedder's eventfd ({@link EventFdInterrupt.Owned}). */
    private static void closeOwned(Interrupt interrupt) {
        if (interrupt instanceof EventFdInterrupt.Owned o) {
            o.close();
        }
    }

    /**
     * Once the device is closed and quiesced: closes the descriptors it duplicated (kicks and
     * interrupts), which no thread of it can touch any more.
     */
    private void closeDuplicates() {
        for (DeviceQueue q : queues) {
            closeOwned(q.interrupt);
            EventFd kick = q.kick;
            if (kick != null) {
                kick.close();
            }
        }
    }

    /**
     * Sets (or clears, with null) queue {@code q}'s inflight tracker; the queue must be stopped.
     * See {@link InflightTracker}.
     */
    public void setInflightTracker(int q, InflightTracker tracker) {
        requireOpen();
        DeviceQueue queue = queue(q);
        requireStopped(queue, "change its inflight tracker");
        run(queue, t -> {
            queue.inflightTracker = tracker;
            return null;
        });
    }

    /**
     * Requests to process first when queue {@code q} next starts: the heads of chains a previous
     * backend had popped but not completed, in the order it popped them. Their avail entries lie
     * behind the resume index, so the caller sets {@code nextAvail} to {@code used.idx} plus
     * their number (vhost-user inflight recovery). The queue must be stopped.
     */
    public void resubmitOnStart(int q, int[] heads) {
        requireOpen();
        DeviceQueue queue = queue(q);
        requireStopped(queue, "queue resubmissions");
        int[] copy = heads.clone();
        run(queue, t -> {
            queue.resubmit = copy;
            queue.resubmitCount = copy.length;
            return null;
        });
    }

    // ------------------------------------------------------------ lifecycle

    /**
     * Starts queue {@code q}: translates its rings once, resumes at the configured indices and
     * processes whatever the driver queued before (a self-kick).
     *
     * @throws IllegalStateException when the ring layout is invalid or outside guest memory
     */
    public void startQueue(int q) {
        requireOpen();
        DeviceQueue queue = queue(q);
        QueueState layout = queue.layout;
        GuestMemory mem = memory;
        if (layout == null || mem == null) {
            throw new IllegalStateException("queue " + q + " cannot start: " + (mem == null ? "no guest memory" : "no ring layout"));
        }
        boolean eventIdx = BlkFeatures.has(model.negotiatedFeatures(), BlkFeatures.RING_EVENT_IDX);
        boolean indirect = BlkFeatures.has(model.negotiatedFeatures(), BlkFeatures.RING_INDIRECT_DESC);
        boolean[] marked = new boolean[1]; // this command marked the queue running (run() may run it again)
        String error = run(queue, t -> {
            if (queue.state == QueueLifecycle.RUNNING) {
                if (marked[0]) {
                    // A late fault cut this start short after it marked the queue running, and
                    // the fault's attribution spared the queue: the start completes (watched again:
                    // idempotent).
                    t.watchKick(queue);
                }
                return null;
            }
            if (queue.state == QueueLifecycle.BROKEN) {
                // Sticky: only a reset (reset(), clearQuarantine()) lets a broken ring run again.
                return "queue " + q + " is quarantined until a reset: " + queue.brokenReason;
            }
            if (queue.ring.restore(mem, layout, eventIdx, indirect) != 0) {
                return "queue " + q + " ring layout rejected (" + queue.ring.error() + "): " + layout;
            }
            t.evidence().note(mem); // evidence for a fault the JVM delivers late (GuestFaults)
            applyLog(queue);
            queue.ring.disableNotifications();
            queue.brokenReason = null;
            queue.state = QueueLifecycle.RUNNING;
            marked[0] = true;
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.STARTED); // tests only: see FaultPoints
            t.watchKick(queue);
            return null;
        });
        if (error != null) {
            throw new IllegalStateException(error);
        }
        kick(q);
    }

    /**
     * Stops queue {@code q} and drains it: returns only when every request it had popped, and
     * every request queued by {@link #resubmitOnStart}, has completed and been pushed to the used
     * ring (a quarantined queue resubmits nothing). Returns the state to resume from. A quarantined
     * queue stops too (and stays quarantined); requests a guest-memory fault made impossible to
     * complete are given up and counted {@link QueueCounters#LOST} instead (see {@link GuestFaults}).
     */
    public QueueState stopQueue(int q) {
        requireOpen();
        return await(submitStop(q), "stopping queue " + q + " (draining its requests)");
    }

    /** Hands queue {@code q}'s stop-and-drain to its I/O thread; the future completes once it is drained. */
    private CompletableFuture<QueueState> submitStop(int q) {
        DeviceQueue queue = queue(q);
        requireNotDataPlane("stopQueue");
        IoThread thread = threadOfQueue[q];
        CompletableFuture<QueueState> done = new CompletableFuture<>();
        thread.submitCommand(new InboxEvent.Command() {
            private boolean begun;
            private final FaultRecovery.LostWatch lost = new FaultRecovery.LostWatch();

            @Override
            public boolean run(IoThread t) {
                if (done.isDone()) {
                    // A late fault landed after it had completed: not again, since commands
                    // queued after it (a start) may have run since, and it would unwatch the kick.
                    return true;
                }
                if (!begun) {
                    begun = true;
                    if (queue.state == QueueLifecycle.RUNNING) {
                        queue.state = QueueLifecycle.STOPPING;
                    }
                    t.flushCompletions();
                }
                // Drained means completed AND pushed: in dedicated mode the completion thread
                // may still owe the used.idx publish of requests already back in the pool.
                if ((queue.inflight > 0 || queue.dirty) && !t.faults().settleLost(queue, lost)) {
                    return false;
                }
                // The index answered counts the recovered requests queued for resubmission
                // (resubmitOnStart): they run first, whatever the throttle says (the I/O thread
                // pops them while the queue is STOPPING). Rewinding the index instead is not
                // sound: after out-of-order completions the avail entries behind it hold
                // completed heads as well as the recovered ones. A quarantined queue runs none.
                if (queue.state == QueueLifecycle.STOPPING && queue.resubmitCount > 0) {
                    return false;
                }
                if (queue.state == QueueLifecycle.STOPPING) {
                    queue.state = QueueLifecycle.STOPPED;
                } else if (queue.state == QueueLifecycle.BROKEN) {
                    // A fault can cut a back-end slot off with no request lost (landing in the
                    // back end's prepare, after the slot was taken): settleLost then reclaims
                    // nothing, and the slot would be gone for good. Guarded: only with nothing
                    // in flight or pending (aio IoBackend.reclaimLostSlots).
                    t.backend().reclaimLostSlots();
                }
                t.unwatchKick(queue);
                QueueState state = queue.ring.active() ? queue.ring.state() : queue.layout;
                queue.layout = state;
                done.complete(state);
                return true;
            }

            @Override
            public void abandon(Throwable cause) {
                done.completeExceptionally(cause); // its caller fails rather than wait for ever
            }
        });
        return done;
    }

    /**
     * Lifts queue {@code q}'s quarantine after the driver reset that queue alone (vhost-user:
     * GET_VRING_BASE stops a ring, and only a new set-up starts it). The queue must be stopped;
     * waits for whatever it still has in flight. A no-op on a queue that is not quarantined.
     */
    public void clearQuarantine(int q) {
        requireOpen();
        DeviceQueue queue = queue(q);
        requireStopped(queue, "lift its quarantine");
        drain(queue);
        run(queue, t -> {
            if (queue.state == QueueLifecycle.BROKEN) {
                queue.state = QueueLifecycle.STOPPED;
                queue.brokenReason = null;
                queue.faultReason = null;
            }
            return null;
        });
    }

    /** Waits until {@code queue} has nothing in flight and nothing unpublished; changes no state. */
    private void drain(DeviceQueue queue) {
        requireNotDataPlane("a queue drain");
        CompletableFuture<Void> done = new CompletableFuture<>();
        FaultRecovery.LostWatch lost = new FaultRecovery.LostWatch();
        threadOfQueue[queue.index].submitCommand(new InboxEvent.Command() {
            @Override
            public boolean run(IoThread t) {
                if (done.isDone()) {
                    return true; // a late fault landed after it had completed: not again
                }
                t.flushCompletions();
                if ((queue.inflight > 0 || queue.dirty) && !t.faults().settleLost(queue, lost)) {
                    return false;
                }
                done.complete(null);
                return true;
            }

            @Override
            public void abandon(Throwable cause) {
                // Given up after throwing in every run: its caller (clearQuarantine) fails rather
                // than wait for ever on a future nothing would complete any more.
                done.completeExceptionally(cause);
            }
        });
        await(done, "draining queue " + queue.index);
    }

    /** I/O thread {@code t} (for tests). */
    IoThread ioThread(int t) {
        return threads[t];
    }

    /** Starts every queue that has a ring layout. */
    public void start() {
        requireOpen();
        for (DeviceQueue q : queues) {
            if (q.layout != null) {
                startQueue(q.index);
            }
        }
    }

    /** Stops and drains every queue. */
    public void stop() {
        requireOpen();
        for (DeviceQueue q : queues) {
            stopQueue(q.index);
        }
    }

    /**
     * Resets the device (virtio 1.2 2.1: the driver wrote 0 to status): drains and stops every
     * queue, forgets ring layouts, indices and quarantine, and renegotiates from the offer.
     */
    public void reset() {
        requireOpen();
        stop();
        for (DeviceQueue q : queues) {
            run(q, t -> {
                q.ring.reset();
                q.resubmitCount = 0;
                q.layout = null;
                q.brokenReason = null;
                q.faultReason = null;
                q.state = QueueLifecycle.STOPPED;
                return null;
            });
        }
        model.negotiate(model.config().offeredFeatures());
    }

    /**
     * Tells the device that the driver made buffers available on queue {@code q}. Lock-free and
     * allocation-free; safe from any thread (a VMM's vCPU thread). A queue number out of range is
     * ignored (the guest chose it).
     *
     * @throws IllegalStateException after {@link #close()} ("device closed")
     */
    public void kick(int q) {
        requireOpen();
        if (q >= 0 && q < queues.length) {
            threadOfQueue[q].kick(q);
        }
    }

    /**
     * Changes the capacity while the device runs (online resize): requests are checked against
     * the new capacity from the next one on, {@link #configSpace()} shows it, and the listener's
     * {@link DeviceListener#configChanged} is called so the VMM can raise the config-change
     * interrupt. The back end's image must already have the new size (grown first, shrunk after).
     *
     * @throws IllegalArgumentException unless {@code capacityBytes} is a positive multiple of 512
     */
    public void resize(long capacityBytes) {
        requireOpen();
        BlkConfig resized = model.config().withCapacity(capacityBytes);
        long disk = diskSizeBytes();
        if (disk >= 0 && capacityBytes > disk) {
            throw new IllegalArgumentException("capacity " + capacityBytes + " bytes is beyond the disk's " + disk
                    + " bytes: grow the disk first (resizeDrivers, or the image's resize)");
        }
        model.setConfig(resized);
        listener.configChanged(resized);
    }

    /**
     * The disk's size as the device's back ends know it, or -1 when unknown: the smallest of the
     * block drivers' sizes (a driver grows through {@link #resizeDrivers}), or for raw drivers the
     * back-end factory's ({@link BackendFactory#sizeBytes()}: the image file's size now).
     */
    private long diskSizeBytes() {
        if (drivers == null) {
            return backends.sizeBytes();
        }
        long min = Long.MAX_VALUE;
        for (IoThread t : threads) {
            min = Math.min(min, t.backend().sizeBytes());
        }
        return min;
    }

    /** How long a driver step on a shared thread (resize, hand-over) waits for the device's requests in flight before it gives up (as qcow2's quiesce). */
    private static final long LEND_DRAIN_NS = TimeUnit.SECONDS.toNanos(120);

    /**
     * Online resize of the disk under the device: each I/O thread's block driver takes the new
     * size ({@link BlockDriver#resize}). Call it before {@link #resize} when growing and after
     * it when shrinking.
     *
     * <p>A driver's resize is synchronous (qcow2 writes its header and L1 table durably, waiting
     * for the disk or its server; RBD calls librbd). On a thread of the device's own it runs
     * there, between rounds. On a shared thread it must not: a round that waits stops every
     * other device on the thread. There, the device's queues pause (not popped; what they have
     * in flight completes, the thread never blocking), the driver is lent to the caller, which
     * resizes on its own thread, and the queues resume after ({@link IoThread#lendBackend}).
     * The resize is durable when this returns; the guest hears of it only after ({@link #resize}).
     *
     * @throws UnsupportedOperationException when the driver cannot resize its disk (an NBD export)
     * @throws IllegalArgumentException for a size the format cannot take
     * @throws java.io.IOException when the resize failed (the disk keeps its old size)
     */
    public void resizeDrivers(long sizeBytes) throws java.io.IOException {
        requireOpen();
        onDrivers(d -> {
            d.resize(sizeBytes);
            return false;
        }, "resized the disk");
    }

    /**
     * A live migration's hand-over, destination side: each I/O thread's block driver takes its
     * image over ({@link BlockDriver#activate}: the writer's locks, every piece of metadata read
     * afresh) on its own thread, between rounds. Call it with the queues stopped, before they
     * start. Returns whether any driver changed state (false for drivers with nothing to hand over).
     *
     * @throws io.vblk.sys.ImageLock.LockedException while another backend still holds the image
     * @throws java.io.IOException when the image cannot be read again
     */
    public boolean activateDrivers() throws java.io.IOException {
        requireOpen();
        return onDrivers(BlockDriver::activate, "activated the image");
    }

    /**
     * A live migration's hand-over, source side: each I/O thread's block driver hands its image
     * over ({@link BlockDriver#inactivate}: metadata and reserved space written back, durable,
     * the writer's locks dropped) on its own thread. Call it with the queues stopped and drained.
     * Returns whether any driver changed state.
     *
     * @throws java.io.IOException when the image could not be made durable (its driver stays active)
     */
    public boolean inactivateDrivers() throws java.io.IOException {
        requireOpen();
        return onDrivers(BlockDriver::inactivate, "inactivated the image");
    }

    /** A step on one block driver, on its I/O thread; returns whether it changed anything. */
    @FunctionalInterface
    private interface DriverStep {
        boolean run(BlockDriver driver) throws java.io.IOException;
    }

    /**
     * Runs a synchronous {@code step} (it may wait for the disk or its server) on every I/O
     * thread's driver. A shared thread's driver is lent to the caller's thread for it
     * ({@link IoThread#lendBackend}: this device's queues pause, their requests in flight
     * complete), so the wait never stops the other devices on that thread; a thread of the
     * device's own runs it between rounds. Returns whether any driver changed state.
     */
    private boolean onDrivers(DriverStep step, String what) throws java.io.IOException {
        requireNotDataPlane("a driver step (" + what + ")");
        boolean changed = false;
        java.util.List<IoThread> lent = new java.util.ArrayList<>();
        try {
            for (IoThread thread : threads) {
                if (thread.isShared()) {
                    thread.lendBackend(LEND_DRAIN_NS);
                    lent.add(thread);
                }
            }
            for (IoThread thread : lent) {
                changed |= step.run(thread.backend()); // this thread owns it now (lent)
            }
        } finally {
            for (IoThread thread : lent) {
                thread.returnBackend();
            }
        }
        return onDriverThreads(step, what) | changed;
    }

    /** Runs {@code step} on the drivers of the device's own I/O threads, each on its thread, waiting for each. */
    private boolean onDriverThreads(DriverStep step, String what) throws java.io.IOException {
        boolean changed = false;
        for (IoThread thread : threads) {
            if (thread.isShared()) {
                continue;
            }
            CompletableFuture<Boolean> done = new CompletableFuture<>();
            thread.submitCommand(new InboxEvent.Command() {
                private boolean began;

                @Override
                public boolean run(IoThread t) {
                    if (done.isDone()) {
                        return true; // a late fault landed after the step had completed: not again
                    }
                    if (began) {
                        // Run again after a late fault left it: a step is not idempotent (a
                        // qcow2 resize would allocate another L1, an activate lock twice), so
                        // it fails and the caller retries the whole call.
                        done.completeExceptionally(new java.io.IOException("a guest memory fault interrupted the I/O thread while it " + what));
                        return true;
                    }
                    began = true;
                    try {
                        done.complete(step.run(t.backend()));
                    } catch (java.io.IOException | RuntimeException | Error e) {
                        if (GuestFaults.isMemoryFault(e)) {
                            // A late fault (see run()): the queues it hit are handled as in a
                            // round, and this step fails rather than run again from the start.
                            t.faults().caughtInCommand(e);
                            done.completeExceptionally(new java.io.IOException("a guest memory fault interrupted the I/O thread while it " + what, e));
                        } else {
                            done.completeExceptionally(e);
                        }
                    }
                    return true;
                }

                @Override
                public void abandon(Throwable cause) {
                    done.completeExceptionally(new java.io.IOException("the I/O thread gave up while it " + what, cause));
                }
            });
            try {
                while (true) {
                    try {
                        changed |= done.get(1, TimeUnit.SECONDS); // timed, as in await()
                        break;
                    } catch (TimeoutException e) {
                        if (closed && threadsEnded() && !done.isDone()) {
                            // As in await(): closed (an export.remove that gave up on a stalled
                            // thread) and the command will never run; do not wait for ever.
                            throw new java.io.IOException("the device closed before its I/O thread " + what);
                        }
                    }
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new java.io.IOException("interrupted while the I/O thread " + what, e);
            } catch (java.util.concurrent.ExecutionException e) {
                Throwable c = e.getCause();
                if (c instanceof java.io.IOException) {
                    throw (java.io.IOException) c;
                }
                if (c instanceof Error) {
                    throw (Error) c;
                }
                throw (RuntimeException) c;
            }
        }
        return changed;
    }

    /**
     * Changes the IOPS and bandwidth limits (0: none) while the device runs; they apply from the
     * next pop pass of every queue, which runs at once: every I/O thread of the device is woken
     * (a throttled queue sleeps until the deadline of the old limits, with its notifications off).
     * A raised or removed limit also scales down the debt run up under the old one (see {@link
     * Throttle#setLimits}).
     *
     * @throws IllegalStateException when the device was built with neither a limit nor
     *         {@code Tuning.Builder.adjustableLimits(true)}
     */
    public void setLimits(long iopsLimit, long bytesPerSecond) {
        requireOpen();
        if (throttle == null) {
            throw new IllegalStateException("the device was built without a throttle: build it with Tuning.adjustableLimits(true)");
        }
        throttle.setLimits(iopsLimit, bytesPerSecond);
        for (IoThread t : threads) {
            // An empty kick (no queue): the inbox entry cancels a sleep being prepared, the
            // wake-up ends one under way, and the round re-asks the throttle for every queue.
            t.kick(-1);
        }
    }

    // ------------------------------------------------------------ migration

    /**
     * Starts dirty logging into {@code bitmap}, a bitmap the VMM owns over guest-physical pages:
     * bit {@code p % 64} of little-endian 64-bit word {@code p / 64} (= bit {@code p % 8} of byte
     * {@code p / 8}) stands for the 4 KiB page {@code p}, as in KVM's and vhost's dirty logs.
     * From now on every byte the device writes into guest memory marks its page, atomically:
     * read data, GET_ID bytes, status bytes, used elements, {@code used.idx} and the ring's
     * notification fields. The VMM may read and clear bits at any time (atomically: the device
     * sets bits with compare-and-set on 64-bit words). Safe while queues run. Writes of
     * requests already in flight are logged if they complete after this call; to be sure
     * nothing was missed, start logging before the first copy pass (as a migration does).
     *
     * @return the log (its {@link DirtyLog#outOfRange()} counts marks beyond the bitmap)
     * @throws IllegalArgumentException if the bitmap is empty, not a multiple of 8 bytes, or unaligned
     */
    public DirtyLog startDirtyLog(AtomicBuffer bitmap) {
        DirtyLog log = new DirtyLog(bitmap);
        startDirtyLog(log);
        return log;
    }

    /**
     * Starts (or switches) dirty logging into {@code log}; see {@link #startDirtyLog(AtomicBuffer)}.
     * Returns once every data-plane thread passed a round ({@link #awaitDataPathPass}): a
     * completion that had read the log before (none, or the one replaced) has then finished its
     * guest-memory writes and marks, so every write still to come is marked in {@code log}.
     */
    public void startDirtyLog(DirtyLog log) {
        requireOpen();
        Objects.requireNonNull(log, "log");
        synchronized (this) {
            dirtyLog = log;
            for (DeviceQueue q : queues) {
                applyLog(q);
            }
        }
        awaitDataPathPass();
    }

    /**
     * Stops dirty logging. Requests already completing may still mark the old log for a moment;
     * once the queues have been stopped ({@link #stopQueue} drains) nothing touches it, so a VMM
     * frees the bitmap after stopping the queues (the end of a migration stops them anyway).
     */
    public synchronized void stopDirtyLog() {
        dirtyLog = null;
        for (DeviceQueue q : queues) {
            applyLog(q);
        }
    }

    /**
     * Returns once every I/O thread of the device, and in dedicated mode its completion thread,
     * has finished all the work it began before this call: whatever the device stopped
     * referencing before the call (a replaced dirty log after {@link #startDirtyLog} or
     * {@link #stopDirtyLog}) is no longer touched by the data path, and may be unmapped. Queues
     * may run; a command on each thread between its rounds, as {@link #setInterrupt} does.
     */
    public void awaitDataPathPass() {
        requireOpen();
        requireNotDataPlane("awaitDataPathPass");
        java.util.List<CompletableFuture<Void>> passes = new java.util.ArrayList<>(threads.length);
        for (IoThread thread : threads) {
            CompletableFuture<Void> passed = new CompletableFuture<>();
            thread.submitCommand(new InboxEvent.Command() {
                private long fence = Long.MIN_VALUE;

                @Override
                public boolean run(IoThread t) {
                    if (passed.isDone()) {
                        return true; // a late fault landed after it had completed: not again
                    }
                    if (fence == Long.MIN_VALUE) {
                        // Between rounds: this thread holds no log; the completion thread may,
                        // in a batch begun before the fence.
                        fence = t.completionFence();
                    }
                    if (!t.completionPassed(fence)) {
                        return false;
                    }
                    passed.complete(null);
                    return true;
                }

                @Override
                public void abandon(Throwable cause) {
                    passed.completeExceptionally(cause);
                }
            });
            passes.add(passed);
        }
        for (CompletableFuture<Void> passed : passes) {
            await(passed);
        }
    }

    /** The dirty log in force, or null. */
    public DirtyLog dirtyLog() {
        return dirtyLog;
    }

    /**
     * Where queue {@code q}'s used-ring writes are logged: {@link #USED_LOG_AT_RING} (default),
     * {@link #USED_LOG_OFF}, or the guest address the ring's first byte is logged at (vhost-user's
     * {@code log_guest_addr}). Applies at once, running or not.
     */
    public synchronized void setUsedRingLog(int q, long logGuestAddress) {
        requireOpen();
        DeviceQueue queue = queue(q);
        queue.usedLogAddress = logGuestAddress;
        applyLog(queue);
    }

    /**
     * Points queue {@code q}'s data and ring logging at the log in force. Volatile stores only:
     * the data path picks them up at its next request.
     */
    private void applyLog(DeviceQueue q) {
        DirtyLog log = dirtyLog;
        long at = q.usedLogAddress;
        q.log = log;
        if (log == null || at == USED_LOG_OFF) {
            q.ring.logUsedRing(null, 0);
        } else if (at == USED_LOG_AT_RING) {
            QueueState layout = q.layout;
            q.ring.logUsedRing(layout == null ? null : log, layout == null ? 0 : layout.usedAddress());
        } else {
            q.ring.logUsedRing(log, at);
        }
    }

    /**
     * Makes every write the device has completed durable (fdatasync of the image, through
     * {@link BackendFactory#sync()}): with the queues stopped, the image is then complete for
     * whoever opens it next (a migration's destination, a restarted backend).
     */
    public void sync() {
        if (drivers != null) {
            drivers.sync();
            return;
        }
        backends.sync();
    }

    /**
     * The device's state for a migration: negotiated features, the config space and each
     * queue's {@link QueueState} (null for a queue never configured). Take it with every queue
     * stopped ({@link #stop()} drains them): a running queue's indices move on.
     *
     * @throws IllegalStateException when a queue runs
     */
    public DeviceState saveState() {
        requireAllStopped("save the device state");
        QueueState[] states = new QueueState[queues.length];
        for (DeviceQueue q : queues) {
            states[q.index] = queueState(q.index);
        }
        return new DeviceState(model.negotiatedFeatures(), configSpace(), states);
    }

    /**
     * Restores a state saved by {@link #saveState()} on another device of the same disk (a
     * migration's destination): features and every queue's layout and indices; then
     * {@link #start()} (after the interrupts and kicks are set) resumes where the source
     * stopped. Queues must be stopped.
     *
     * @throws IllegalArgumentException when the config space or queue count differ (another
     *         disk, or another shape), or a feature was not offered here
     */
    public void restoreState(DeviceState state) {
        requireOpen();
        Objects.requireNonNull(state, "state");
        requireAllStopped("restore the device state");
        if (!Arrays.equals(state.config(), configSpace())) {
            throw new IllegalArgumentException("saved config space differs from this device's: another disk or shape");
        }
        if (state.queues().length != queues.length) {
            throw new IllegalArgumentException("saved state has " + state.queues().length + " queue(s), this device "
                    + queues.length);
        }
        long unknown = state.features() & ~model.config().offeredFeatures();
        if (unknown != 0) {
            throw new IllegalArgumentException(String.format("saved features 0x%x include 0x%x, not offered here",
                    state.features(), unknown));
        }
        model.negotiate(state.features());
        for (DeviceQueue q : queues) {
            QueueState s = state.queues()[q.index];
            q.layout = s;
            applyLog(q);
        }
    }

    // ------------------------------------------------------------ observability

    /** Queue {@code q}'s counters, live. */
    public QueueCounters counters(int q) {
        return queue(q).counters;
    }

    /** All latencies (ns, popped to pushed) queue {@code q} recorded, as a copy. */
    public Histogram latency(int q) {
        return queue(q).latency();
    }

    /**
     * What queue {@code q}'s recorded latencies say (count, mean, maximum, p50, p99, p99.9), read
     * in place: what scrapes and stats should use, since {@link #latency(int)} copies the
     * histogram.
     */
    public LatencySummary latencySummary(int q) {
        return queue(q).latencySummary();
    }

    /**
     * Queue {@code q}'s latencies since it was built, in fixed buckets (for a Prometheus
     * histogram; {@link #resetLatency(int)} does not reset them).
     */
    public LatencyBuckets latencyBuckets(int q) {
        return queue(q).latencyBuckets();
    }

    /** Forgets queue {@code q}'s recorded latencies. */
    public void resetLatency(int q) {
        queue(q).resetLatency();
    }

    /** Whether queue {@code q} is quarantined for a corrupt ring. */
    public boolean isBroken(int q) {
        return queue(q).state == QueueLifecycle.BROKEN;
    }

    /** Whether queue {@code q} is processing requests. */
    public boolean isRunning(int q) {
        return queue(q).state == QueueLifecycle.RUNNING;
    }

    /** Why queue {@code q} was quarantined, or null. */
    public String brokenReason(int q) {
        return queue(q).brokenReason;
    }

    @Override
    public String toString() {
        return "BlockDevice[" + name + "]";
    }

    /** Number of queues. */
    public int numQueues() {
        return queues.length;
    }

    /** Stops every queue (draining them) and the I/O threads; the back ends are closed. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        requireNotDataPlane("close");
        closed = true;
        for (DeviceQueue q : queues) {
            await(submitStop(q.index), "stopping queue " + q.index + " (draining its requests)");
        }
        shutdownThreads(Deadlines.NO_DEADLINE);
    }

    /**
     * As {@link #close()}, but waits at most {@code drainWaitMs} for the queues to drain: a back
     * end that never completes (an NBD server that stopped answering, a stalled io_uring, a file
     * on a hung FUSE server) must not hold its closer for ever. Past the deadline the I/O threads
     * are shut down with requests still in flight: {@link #quiesced()} then stays false (the
     * caller keeps the guest memory mapped and the image's locks), and every control call still
     * waiting on the device (a frontend's GET_VRING_BASE) fails instead of answering. The whole
     * close keeps to the deadline, give or take 200 ms ({@code CLOSE_GRACE_MS}): the I/O threads' ends
     * and the back ends' waits for the kernel at close take what is left of it (a back end past
     * it closes undrained, freeing nothing the kernel may still write; a qcow2 driver's own work,
     * a cluster refill, gets at least 200 ms per image of its chain, so that a drained close
     * returns its reserved clusters). A wait of 73 years or
     * more ({@code Long.MAX_VALUE}: for ever) is no deadline: the threads and back ends then keep
     * their own bounds, as {@link #close()}. Returns whether every queue drained; false also when
     * the device was already closed.
     */
    public synchronized boolean close(long drainWaitMs) {
        if (closed) {
            return false;
        }
        requireNotDataPlane("close");
        closed = true;
        long deadline = Deadlines.after(TimeUnit.MILLISECONDS.toNanos(Math.max(0, drainWaitMs)));
        boolean drained = true;
        for (DeviceQueue q : queues) {
            try {
                if (!awaitUntil(submitStop(q.index), deadline)) {
                    drained = false;
                    break;
                }
            } catch (IllegalStateException e) {
                drained = false;
                break;
            }
        }
        // A queue that drained just at the deadline still gets its thread ended and its back end
        // closed drained: a little past it, never the threads' own 10 s or the back ends'. A wait
        // too long to be a deadline ("for ever", Long.MAX_VALUE) is none: their own bounds hold.
        shutdownThreads(Deadlines.later(deadline, Deadlines.after(TimeUnit.MILLISECONDS.toNanos(CLOSE_GRACE_MS))));
        return drained;
    }

    /** How far past its deadline {@link #close(long)} may go to end the I/O threads and close the back ends. */
    static final long CLOSE_GRACE_MS = 200;

    /**
     * Shuts every I/O thread down by {@code deadlineNs} (or {@link Deadlines#NO_DEADLINE}), each
     * whatever happened to the others: a shared thread that stays in a stalled round lets its
     * member go only when the round ends (past a deadline the member is left to it, undrained;
     * without one, after its 30 s change wait, this throws), and that must not leave the
     * device's other threads running. The first failure is rethrown. The fixed-buffer registration's share of
     * the process's pinned-memory budget goes back once no back end can still hold the pages
     * pinned ({@link #whenQuiesced}): an undrained io_uring ring keeps its registration until
     * its reaper releases it.
     */
    private void shutdownThreads(long deadlineNs) {
        RuntimeException first = null;
        for (IoThread t : threads) {
            try {
                t.shutdown(deadlineNs);
            } catch (RuntimeException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        whenQuiesced(() -> {
            registration.release();
            closeDuplicates();
            GuestMemory mem = memory;
            if (mem != null) {
                mem.detach(this); // no thread and no kernel operation of this device can touch it now
            }
        });
        if (first != null) {
            throw first;
        }
    }

    /**
     * After {@link #close()}: runs {@code action} once {@link #quiesced()} holds, so that what the
     * kernel may still write into (the guest memory's mapping) goes exactly when it no longer
     * can: at once, on this thread, when the device is quiesced already; otherwise on the thread
     * that ends the last I/O thread, or that releases the last back end a close left with
     * operations in the kernel (aio's reaper, once the kernel finished them; see {@link
     * io.vblk.aio.IoBackends#undrainedBackends()}). Never for a device that never quiesces (a
     * back end kept for the JVM's life). {@code action} must be short and must not block.
     *
     * @throws IllegalStateException before {@link #close()}
     */
    public void whenQuiesced(Runnable action) {
        Objects.requireNonNull(action, "action");
        if (!closed) {
            throw new IllegalStateException("the device is not closed");
        }
        java.util.concurrent.atomic.AtomicInteger left = new java.util.concurrent.atomic.AtomicInteger(threads.length);
        Runnable oneEnded = () -> {
            // Each thread's part is final once it ran (ended, its back ends drained for good),
            // so the last one sees the device quiesced; one whose back end only says so (a
            // wrapper reporting undrained) keeps the action from running, as it should.
            if (left.decrementAndGet() == 0 && quiesced()) {
                action.run();
            }
        };
        for (IoThread t : threads) {
            t.whenEndedDrained(oneEnded);
        }
    }

    /** Control calls waiting on an I/O thread for longer than {@link #STALL_REPORT_MS} right now. */
    private final java.util.concurrent.atomic.AtomicInteger stalledCalls = new java.util.concurrent.atomic.AtomicInteger();

    /** How long a control call waits on an I/O thread before it is reported stalled. */
    static final long STALL_REPORT_MS = 10_000;

    /**
     * Control calls (stop, drain, reset of a queue) waiting right now for longer than 10 s on an
     * I/O thread: a back end that does not complete the requests in flight. For metrics: each
     * one also goes to {@link DeviceListener#controlCallStalled} when it is reported and when it ends.
     */
    public int stalledControlCalls() {
        return stalledCalls.get();
    }

    /** Whether {@link #close()} has begun. */
    public boolean isClosed() {
        return closed;
    }

    /**
     * Whether the device is closed and nothing of it can touch guest memory any more: every I/O
     * thread has ended (no round, no command) and closed its back end drained, so no operation
     * the kernel was handed can still read or write the guest's pages. Until then a caller that
     * gave up waiting for the device must not unmap the memory it was given.
     */
    public boolean quiesced() {
        if (!closed) {
            return false;
        }
        for (IoThread t : threads) {
            if (!t.endedDrained()) {
                return false;
            }
        }
        return true;
    }

    private boolean threadsEnded() {
        for (IoThread t : threads) {
            if (!t.ended()) {
                return false;
            }
        }
        return true;
    }

    // ------------------------------------------------------------ internals

    private DeviceQueue queue(int q) {
        if (q < 0 || q >= queues.length) {
            throw new IllegalArgumentException("no queue " + q + " (device has " + queues.length + ")");
        }
        return queues[q];
    }

    /** Every control method's first check: after {@link #close()} nothing waits on the ended I/O threads. */
    private void requireOpen() {
        if (closed) {
            throw new IllegalStateException("device closed");
        }
    }

    /**
     * A control call waits for a command of the device's I/O thread: made on a data-plane thread
     * (an {@link Interrupt} or {@link DeviceListener} callback runs there) it would wait for
     * itself, for good, and {@link #close()} with it.
     */
    private static void requireNotDataPlane(String what) {
        if (DataPlaneThreads.isCurrent()) {
            throw new IllegalStateException(what + " was called on a vblk data-plane thread (from an Interrupt or "
                    + "DeviceListener callback), which it would wait for for ever: hand it to another thread");
        }
    }

    private void requireStopped(DeviceQueue q, String what) {
        if (q.state == QueueLifecycle.RUNNING || q.state == QueueLifecycle.STOPPING) {
            throw new IllegalStateException("queue " + q.index + " must be stopped to " + what);
        }
    }

    private void requireAllStopped(String what) {
        for (DeviceQueue q : queues) {
            requireStopped(q, what);
        }
    }

    /** A one-shot command on the queue's I/O thread. */
    private interface OneShot<T> {
        T apply(IoThread thread);
    }

    /**
     * How often a one-shot command runs again after a guest-memory fault the JVM delivered while
     * it ran, before it fails: each fault is delivered once, so one retry is the rule.
     */
    static final int LATE_FAULT_RETRIES = 4;

    /**
     * Runs {@code body} on the queue's I/O thread and returns its value. A guest-memory fault
     * landing in it (a frontend shrank its memory file under the mapping; Java 17 raises the
     * SIGBUS as an InternalError at a later safepoint of the I/O thread, possibly in a command
     * that touches no guest memory at all, see {@link GuestFaults}) is handled as the data path
     * handles one landing outside a pop loop (attributed by evidence: the queues whose memory
     * shrank are quarantined, or, with no evidence, the thread's live queues), and the command
     * runs again at the next round, up to {@link #LATE_FAULT_RETRIES} times. Without that the
     * command failed ("internal error" for vhost, which closed the frontend's connection, and
     * when the fault was another frontend's, the next one's on the same thread). Every body is
     * idempotent, so running it again after a partial run completes it.
     */
    private <T> T run(DeviceQueue queue, OneShot<T> body) {
        requireNotDataPlane("a control call");
        CompletableFuture<T> done = new CompletableFuture<>();
        threadOfQueue[queue.index].submitCommand(new InboxEvent.Command() {
            private int lateFaults;

            @Override
            public boolean run(IoThread t) {
                if (done.isDone()) {
                    return true; // a late fault landed after it had completed: not again
                }
                try {
                    io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.COMMAND); // tests only: see FaultPoints
                    done.complete(body.apply(t));
                } catch (RuntimeException | Error e) {
                    if (GuestFaults.isMemoryFault(e) && lateFaults++ < LATE_FAULT_RETRIES) {
                        t.faults().caughtInCommand(e);
                        return false; // again at the next round
                    }
                    // Anything else (a bug) fails the command, never leaves its caller waiting.
                    done.completeExceptionally(e);
                }
                return true;
            }

            @Override
            public void abandon(Throwable cause) {
                done.completeExceptionally(cause); // left by a fault in its tail every time
            }
        });
        return await(done);
    }

    /** Waits for {@code future} until {@code deadlineNs} (System.nanoTime); false when it passed first. */
    private <T> boolean awaitUntil(CompletableFuture<T> future, long deadlineNs) {
        while (!future.isDone()) {
            long left = Deadlines.leftNs(deadlineNs);
            if (left <= 0) {
                return false;
            }
            try {
                future.get(Math.min(left, TimeUnit.SECONDS.toNanos(1)), TimeUnit.NANOSECONDS);
            } catch (TimeoutException e) {
                // again, until the deadline
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            } catch (ExecutionException e) {
                return true; // done, if badly: the queue is not waiting on anything
            }
        }
        return true;
    }

    private <T> T await(CompletableFuture<T> future) {
        return await(future, "a control call");
    }

    /**
     * Waits for a command of the I/O thread, as long as it takes: the contract (a drain answers
     * only once every request is back) allows no deadline here. A wait past {@link
     * #STALL_REPORT_MS} is reported to the listener ({@code what}) and counted in {@link
     * #stalledControlCalls()} until it ends, so a stuck back end is visible; only {@link
     * #close(long)} gives up on it (and then this call fails).
     */
    private <T> T await(CompletableFuture<T> future, String what) {
        long start = System.nanoTime();
        boolean stalled = false;
        try {
            while (true) {
                try {
                    // Timed, and again: a guest-memory fault the JVM delivers on the I/O thread
                    // inside complete() can leave the future done without waking its waiter.
                    return future.get(1, TimeUnit.SECONDS);
                } catch (TimeoutException e) {
                    if (closed && threadsEnded() && !future.isDone()) {
                        // A control call that raced close() (a frontend's teardown that the
                        // server stopped waiting for): its command will never run. Without this
                        // its caller waited for ever, holding a handler thread.
                        throw new IllegalStateException("the device is closed: its I/O threads have ended");
                    }
                    long waitedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
                    if (!stalled && waitedMs >= STALL_REPORT_MS) {
                        stalled = true;
                        stalledCalls.incrementAndGet();
                        reportStall(what, waitedMs, false);
                    }
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for the I/O thread", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof RuntimeException) {
                throw (RuntimeException) cause;
            }
            throw new IllegalStateException(cause);
        } finally {
            if (stalled) {
                stalledCalls.decrementAndGet();
                reportStall(what, TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start), true);
            }
        }
    }

    private void reportStall(String what, long waitedMs, boolean ended) {
        try {
            listener.controlCallStalled(what, waitedMs, ended);
        } catch (RuntimeException e) {
            // the owner's report must not change the outcome of the call
        }
    }

    /** Builder for {@link BlockDevice}. */
    public static final class Builder {
        private final BlkConfig config;
        private final BackendFactory backends;
        private DriverFactory drivers;
        private GuestMemory memory;
        private Tuning tuning = Tuning.defaults();
        private DeviceListener listener = DeviceListener.NONE;
        private String name = "vblk";
        private SharedIoThread[] ioThreads;

        private Builder(BlkConfig config, BackendFactory backends) {
            this.config = Objects.requireNonNull(config, "config");
            this.backends = Objects.requireNonNull(backends, "backends");
        }

        /** The guest memory (may also be set later with {@link BlockDevice#setMemory}). */
        public Builder memory(GuestMemory value) {
            memory = value;
            return this;
        }

        /**
         * Runs the device's queues on these shared I/O threads (queue q on thread q mod n, n
         * capped at the queue count) instead of threads of its own; the tuning's thread mapping
         * is then unused, and its threading mode must be {@link ThreadingMode#SHARED}. The
         * threads stay the caller's: close the device before them.
         */
        public Builder ioThreads(SharedIoThread... value) {
            if (value.length == 0) {
                throw new IllegalArgumentException("ioThreads: at least one thread");
            }
            for (SharedIoThread t : value) {
                Objects.requireNonNull(t, "ioThreads element");
            }
            ioThreads = value.clone();
            return this;
        }

        /** How the device runs: threads, wait strategy, limits, back-end depth (default {@link Tuning#defaults()}). */
        public Builder tuning(Tuning value) {
            tuning = Objects.requireNonNull(value, "tuning");
            return this;
        }

        /**
         * Who hears of quarantined queues, attributed faults, config changes and stalled control
         * calls (default {@link DeviceListener#NONE}); its callbacks run on data-plane threads,
         * where control calls throw (see {@link DeviceListener}).
         */
        public Builder listener(DeviceListener value) {
            listener = Objects.requireNonNull(value, "listener");
            return this;
        }

        /**
         * Serves the disk through block drivers from {@code value} (a qcow2 image, a network
         * disk) instead of raw drivers over the builder's back ends.
         */
        public Builder drivers(DriverFactory value) {
            drivers = Objects.requireNonNull(value, "drivers");
            return this;
        }

        BlockDriver openDriver(int depth) {
            if (drivers != null) {
                return drivers.open(depth);
            }
            RawDriver raw = new RawDriver(backends.open(depth, tuning.threadingMode() == ThreadingMode.SHARED),
                    config.capacitySectors() << 9, config.readOnly(), true);
            RawDriver.Resizer resizer = backends.resizer();
            return raw.resizableBy(resizer != null ? resizer : size -> {
                throw new UnsupportedOperationException("online resize of this raw disk is not supported: its "
                        + "BackendFactory has no resizer (BackendFactory.of(kind, image) resizes the image file)");
            });
        }

        /**
         * Refuses a config the disk cannot serve: a capacity beyond the disk's size, or a writable
         * config over a read-only disk (writes would fail one by one instead of the driver seeing
         * VIRTIO_BLK_F_RO).
         */
        void checkDisk(BlockDriver driver) {
            long capacity = config.capacitySectors() << 9;
            long size = drivers != null ? driver.sizeBytes() : backends.sizeBytes();
            if (size >= 0 && capacity > size) {
                throw new IllegalArgumentException("config capacity " + capacity + " bytes is beyond the disk's "
                        + size + " bytes");
            }
            boolean readOnlyDisk = drivers != null ? driver.readOnly() : backends.readOnly();
            if (readOnlyDisk && !config.readOnly()) {
                throw new IllegalArgumentException("the disk is read-only: build the config with readOnly(true) "
                        + "(it then offers VIRTIO_BLK_F_RO and neither DISCARD nor WRITE_ZEROES)");
            }
        }

        /** Prefix of the device's thread names. */
        public Builder name(String value) {
            name = Objects.requireNonNull(value, "name");
            return this;
        }

        /**
         * Builds the device and starts its I/O threads (queues stay stopped).
         *
         * @throws IllegalArgumentException when the config's capacity is beyond the disk's size, or
         *         the disk is read-only and the config is not ({@link BlkConfig.Builder#readOnly});
         *         for raw back ends the disk is known only through {@link BackendFactory#sizeBytes()}
         *         and {@link BackendFactory#readOnly()} ({@link BackendFactory#of} reports its image)
         * @throws IllegalStateException when the guest memory is closed
         */
        public BlockDevice build() {
            return new BlockDevice(this);
        }
    }
}
