package io.vblk.aio;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.TimeUnit;

import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.sys.Native;

/**
 * What every back end shares: argument checks, slots, bounce buffers, and the "deferred"
 * completion path. A back end supplies how an operation reaches the kernel ({@code enqueue*},
 * {@link #submitQueued()}) and how completions come back ({@link #reapQueued}).
 *
 * <p>Deferred completions are operations finished by the submitting thread itself, all of them
 * short: operations that failed before reaching the kernel, whose submission the kernel refused,
 * everything of the null back end. They are performed in {@link #submit()}, queued on an SPSC
 * ring, and delivered by {@link #poll} exactly like kernel completions, with the completion
 * signal raised once per submit, never inline; or, when the submitter reaps too ({@link
 * #reapOnSubmittingThread()}), with no signal at all: the submitter sees them through {@link
 * #completionsReady()} (a write(2) per submit saved, which on the null back end was one per I/O).
 *
 * <p>Offloaded operations are the long ones a kernel interface has no asynchronous form for
 * (discard and write-zeroes under Linux AIO, a flush the kernel refused as IOCB_CMD_FDSYNC, a
 * zeroing io_uring's FALLOCATE could not do): they go to the back end's {@link Offload} helper
 * thread at submit, never run on the submitting or reaping thread, and come back through
 * {@link #poll} like the others.
 *
 * <p>Bounce copies go through {@link BounceCopier}, a batch at a time: the writes one submit
 * stages (copied just before they are queued for the kernel) and the reads one poll copies back
 * (delivered at the end of that poll); guest memory that faults fails its operation with EFAULT
 * and raises nothing.
 *
 * <p>{@link #inFlight()} is derived, never kept as a running count: what the kernel (or the
 * workers, or the helper thread) has taken and not given back, read from the kernel's own
 * indices or from the hand-over queues' own counters, plus finished operations not yet delivered.
 * The submitter's lists hand a slot on only after removing it. So an exception the JVM throws
 * anywhere on the submitting/reaping thread (a guest-memory fault delivered late: engine
 * GuestFaults) can lose a completion (its request is then given up by the engine's drain, and
 * its slot comes back once nothing is in flight: {@link #reclaimLostSlots()}), but never leaves the count above what can still
 * complete (a drain waiting for ever) or below what may still touch memory, and never hands an
 * operation on twice. Linux AIO is the one exception, see {@link LinuxAioBackend}.
 */
abstract class SlottedBackend implements IoBackend {
    /** Transfer plan: hand the guest segments to the kernel as they are. */
    static final int AS_IS = 0;
    /** Transfer plan: go through the slot's aligned bounce buffer. */
    static final int BOUNCE = 1;
    /** The most one read or write may move: Linux's MAX_RW_COUNT (INT_MAX rounded down to a page). */
    static final long MAX_TRANSFER_BYTES = 0x7ffff000L;

    private static final VarHandle SIGNALLED;

    static {
        try {
            MethodHandles.Lookup lookup = MethodHandles.lookup();
            SIGNALLED = lookup.findVarHandle(SlottedBackend.class, "signalled", boolean.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    protected final Image image;
    protected final SlotTable slots;
    protected final CompletionSignal signal;
    private final long maxBounceBytes;
    private final SpscIntRing deferred;
    /** Slots the submitter completes itself at the next submit (submitter-owned). */
    private final IntFifo local;
    /** Bounced transfers waiting for the device's {@link BounceBudget}, in arrival order (submitter-owned). */
    private final IntFifo waiting;
    /** Bounced writes whose data is copied in at the next submit, then queued (submitter-owned). */
    private final IntFifo staging;
    /** Slots for the helper thread at the next submit (submitter-owned). */
    private final IntFifo blocking;
    /** Bounced reads reaped in this poll, copied back and delivered at its end (reaper-owned). */
    private final IntFifo copyOuts;
    /** The submitter's copier (writes in) and the reaper's (reads back): each owns its iovec arrays. */
    private final BounceCopier stager;
    private final BounceCopier copier;
    /** Created on the first offloaded operation (once per back end, under a lock). */
    private volatile Offload offload;
    /** Cuts a long offloaded zeroing short at close; preallocated, so nothing per operation. */
    private final java.util.function.BooleanSupplier closing = () -> this.closed;

    /** True from a signal until the reaper's next poll: coalesces signals to one per poll. */
    @SuppressWarnings("unused")
    private boolean signalled;
    /**
     * Reaper only: the completion event may be raised with nothing left to reap for it (a poll
     * reaped the kernel's ring, which signals the event per completion, or took a signal's
     * completions); {@link #rearmCompletions()} then reads it before the reaper sleeps.
     */
    private boolean eventRaised;
    protected volatile boolean closed;
    /**
     * What {@link #close()} left with the kernel: nothing, a helper call that did not finish, or
     * slots; back to DRAINED once the reaper saw the kernel finish them ({@link Undrained}).
     * CLOSING while close waits.
     */
    private volatile int undrained = DRAINED;
    private static final int DRAINED = 0;
    /** A fallocate or fdatasync of the helper thread did not finish: everything stays (the reaper waits). */
    private static final int HELPER_STUCK = 1;
    /** Operations still with the kernel: their slots stay allocated (until the reaper saw them finish). */
    private static final int SLOTS_KEPT = 2;
    /**
     * {@link #close()} is waiting for the kernel: not drained (yet). Set before {@code closed}, so
     * that {@link #closedDrained()} is never true while close may still return undrained (an
     * abandoned I/O thread still closing its back end while Export.close asks would otherwise
     * have the image's locks released and the image closed under the kernel's I/O).
     */
    private static final int CLOSING = 3;
    /**
     * The submitter reaps and checks {@link #completionsReady()} before it sleeps (see {@link
     * #reapOnSubmittingThread()}): operations finished inside {@link #submit()} raise no signal.
     */
    private boolean submitterReaps;

    /**
     * This back end's hold on its image ({@link Image#hold()}), taken at creation and released
     * once ({@link #releaseImage}) when nothing of it can reach the file any more: at a drained
     * close, or when the reaper frees an undrained one. An embedder's {@link Image#close()}
     * while the back end runs is deferred until then, so the descriptor number the back end's
     * iocbs and SQEs carry never names another file. Null when there is no image.
     */
    private final java.util.concurrent.atomic.AtomicBoolean imageHold;

    /**
     * Takes the image hold as its last step, so a failure here leaves none (and closes the
     * {@code signal} it was given). A subclass's own set-up runs after it, with the hold taken:
     * every subclass constructor frees what it made and calls {@link #setupFailed()} on any
     * failure, an Error included (an OutOfMemoryError of a full direct-memory pool, a thread
     * the system refuses), or the image's descriptor is never closed.
     */
    SlottedBackend(Image image, BackendOptions options, CompletionSignal signal) {
        this.image = image;
        this.signal = signal;
        SlotTable table = null;
        try {
            table = new SlotTable(options.depth(), options.maxSegments(), image == null ? null : image.bounceBudget());
            this.slots = table;
            this.waiting = new IntFifo(options.depth());
            this.staging = new IntFifo(options.depth());
            this.copyOuts = new IntFifo(options.depth());
            this.stager = new BounceCopier(table);
            this.copier = new BounceCopier(table);
            this.maxBounceBytes = options.maxBounceBytes();
            this.deferred = new SpscIntRing(options.depth());
            this.local = new IntFifo(options.depth());
            this.blocking = new IntFifo(options.depth());
            this.imageHold = image == null ? null : new java.util.concurrent.atomic.AtomicBoolean(true);
            // Last: an allocation above that fails leaves no hold behind.
            if (image != null && !image.hold()) {
                throw new IllegalArgumentException("image is closed: " + image);
            }
        } catch (Throwable t) {
            if (table != null) {
                table.close();
            }
            signal.close();
            throw t;
        }
    }

    // ---------------------------------------------------------------- back-end specific

    /** Queues a read or write whose buffers are staged in {@code slot}, with its transfer plan. */
    abstract void enqueueTransfer(int slot, boolean isWrite, int plan);

    /** Queues a flush. */
    abstract void enqueueFlush(int slot);

    /** Queues a discard or write-zeroes (op code in the slot). */
    abstract void enqueueZeroing(int slot);

    /** Hands queued operations to the kernel; returns how many it took, or -errno if none. */
    abstract int submitQueued();

    /** Operations queued for the kernel and not yet taken. */
    abstract int queuedCount();

    /**
     * Operations the kernel (or the back end's workers) has taken and not yet given back through
     * {@link #reapQueued}, derived from state an exception cannot leave half-updated (see the
     * class comment). Never below what may still run.
     */
    abstract int kernelInFlight();

    /** Reaps up to {@code max} kernel completions through {@link #complete}. */
    abstract int reapQueued(CompletionSink sink, int max);

    /** Whether kernel completions are waiting to be reaped (cheap, reaper thread). */
    abstract boolean hasQueuedCompletions();

    /**
     * Waits up to {@code timeoutNs} (negative: without limit) for every kernel operation in
     * flight and drops its completion (close and its reaper only). Returns {@link #AWAITED},
     * {@link #TIMED_OUT} (operations still in flight) or {@link #REFUSED} (the kernel refuses
     * this thread the wait: io_uring's single-issuer ring and a thread not its owner).
     */
    abstract int awaitQueued(long timeoutNs);

    /** {@link #awaitQueued}: nothing in flight any more. */
    static final int AWAITED = 0;
    /** {@link #awaitQueued}: the time ran out with operations in flight. */
    static final int TIMED_OUT = 1;
    /** {@link #awaitQueued}: the kernel refused the wait; operations in flight. */
    static final int REFUSED = 2;

    /** Frees kernel resources once nothing is in flight. */
    abstract void release();

    /**
     * Close, when its wait ran out: drops operations handed over but not yet started (a queue
     * the back end's own threads take from), so that the reaper waits only for what is really
     * in progress and nothing starts on the file after an undrained close. They come back as
     * completions that close drops. Returns how many. Default: none (what the kernel took has
     * started).
     */
    int dropUnstarted() {
        return 0;
    }

    /**
     * Close, returning undrained: keeps whatever the reaper still needs past the caller's
     * next steps. Released in {@link #release()}. Default: nothing (the image itself stays held
     * until the reaper frees the back end, see {@link #imageHold}).
     */
    void keepForReaper() {
    }

    /**
     * Whether {@link #release()} left nothing that can still reach the file (the thread back
     * end: false while a worker still lives, stuck in the file); only then does the reaper let
     * go of the image. Default: true.
     */
    boolean fileReleased() {
        return true;
    }

    /**
     * Lets go of the image hold taken at creation, once whatever calls it: a deferred {@link
     * Image#close()} happens now (with its final fdatasync when {@code drained}).
     */
    final void releaseImage(boolean drained) {
        if (imageHold != null && imageHold.compareAndSet(true, false)) {
            image.releaseHold(drained);
        }
    }

    /**
     * Tests only (null in production): told each named step of a back end's set-up after the
     * image hold where something can fail for real (an OutOfMemoryError: a full direct-memory
     * pool, a thread the system refuses), so a test can throw there. Neither can be made to
     * fail at one chosen allocation on demand.
     */
    static volatile java.util.function.Consumer<String> setupHook;

    /** A step of a subclass's set-up (see {@link #setupHook}): nothing in production. */
    static void setupStep(String step) {
        java.util.function.Consumer<String> hook = setupHook;
        if (hook != null) {
            hook.accept(step);
        }
    }

    /**
     * A subclass constructor failed after this one took the image hold: gives back the hold
     * (the subclass frees its own resources, as before).
     */
    final void setupFailed() {
        releaseImage(false);
    }

    /**
     * Decides how a transfer reaches the kernel under the image's O_DIRECT rules: {@link #AS_IS},
     * {@link #BOUNCE}, or {@code -EINVAL} when the offset or total length is misaligned (no
     * buffer copy can fix the position in the file).
     */
    int planTransfer(long offset, IoVector buffers, long total) {
        if (image == null) {
            return AS_IS;
        }
        return plan(offset, buffers, total, image.offsetAlignment() - 1, image.memoryAlignment() - 1);
    }

    static int plan(long offset, IoVector buffers, long total, long offsetMask, long memoryMask) {
        if (((offset | total) & offsetMask) != 0) {
            return -Errno.EINVAL;
        }
        if ((offsetMask | memoryMask) == 0) {
            return AS_IS;
        }
        for (int i = 0, n = buffers.count(); i < n; i++) {
            // The block layer checks each segment: address against the DMA alignment, length
            // against the logical block size.
            if (((buffers.address(i) & memoryMask) | (buffers.length(i) & offsetMask)) != 0) {
                return BOUNCE;
            }
        }
        return AS_IS;
    }

    /**
     * Performs a deferred operation on the submitting thread and returns its result: only what is
     * short (a failure's stored result). The null back end overrides it.
     */
    long performLocally(int slot) {
        return slots.op(slot) == SlotTable.OP_FAILED ? slots.result(slot) : -Errno.EINVAL;
    }

    /**
     * Helper thread: performs an offloaded flush, discard or write-zeroes (the modes the image
     * still accepts, falling back to written zeros; chunked, cut short at close) and stores its
     * result in the slot.
     */
    final void performOffloaded(int slot) {
        long result;
        switch (slots.op(slot)) {
            case SlotTable.OP_FLUSH:
                result = image.fdatasync();
                break;
            case SlotTable.OP_DISCARD:
                result = image.discard(slots.offset(slot), slots.length(slot), discardRange.address(), closing);
                break;
            case SlotTable.OP_WRITE_ZEROES:
                result = image.zeroRange(slots.offset(slot), slots.length(slot), image.writeZeroesMode(false), false, closing);
                break;
            case SlotTable.OP_WRITE_ZEROES_UNMAP:
                result = image.zeroRange(slots.offset(slot), slots.length(slot), image.writeZeroesMode(true), true, closing);
                break;
            default:
                result = -Errno.EINVAL;
        }
        slots.result(slot, result);
    }

    /** What a thread-pool worker checks between zeroing chunks: whether the back end closes. */
    final java.util.function.BooleanSupplier closing() {
        return closing;
    }

    /**
     * The helper thread's BLKDISCARD range ({@link Image#discard}), taken at open: direct memory,
     * which every disk shares, may be used up by the first offloaded operation, and an
     * OutOfMemoryError there would end the helper thread and strand every flush after it.
     */
    private final io.vblk.sys.NativeBuffer discardRange = new io.vblk.sys.NativeBuffer(Image.DISCARD_RANGE_BYTES);

    // ---------------------------------------------------------------- IoBackend

    @Override
    public final int depth() {
        return slots.depth();
    }

    @Override
    public final int freeSlots() {
        return slots.freeCount();
    }

    @Override
    public final int prepareRead(long offset, IoVector buffers, long userData) {
        return prepareTransfer(offset, buffers, userData, false);
    }

    @Override
    public final int prepareWrite(long offset, IoVector buffers, long userData) {
        if (image != null && image.readOnly()) {
            return -Errno.EROFS;
        }
        return prepareTransfer(offset, buffers, userData, true);
    }

    private int prepareTransfer(long offset, IoVector buffers, long userData, boolean isWrite) {
        if (closed) {
            return -Errno.EBADF;
        }
        long total = buffers.totalLength();
        if (buffers.count() > slots.maxSegments() || total > MAX_TRANSFER_BYTES
                || (image != null && !image.contains(offset, total))) {
            return -Errno.EINVAL;
        }
        int plan = planTransfer(offset, buffers, total);
        if (plan < 0) {
            return plan;
        }
        if (plan == BOUNCE && (total > maxBounceBytes
                || (image != null && total > image.bounceBudget().limitBytes()))) {
            // More than may ever be bounced at once: waiting would never end.
            return -Errno.EINVAL;
        }
        int slot = slots.acquire();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.PREPARE_TAKEN); // tests only: see FaultPoints
        slots.begin(slot, isWrite ? SlotTable.OP_WRITE : SlotTable.OP_READ, userData, offset, total);
        slots.stageSegments(slot, buffers);
        if (plan != BOUNCE) {
            enqueueTransfer(slot, isWrite, plan);
        } else if (!waiting.isEmpty()) {
            waiting.add(slot); // behind earlier waiters: arrival order
        } else {
            int staged = slots.stageBounce(slot);
            if (staged == SlotTable.NO_BUDGET) {
                waiting.add(slot); // the budget is spent: wait for it
            } else {
                bounced(slot, staged);
            }
        }
        return 0;
    }

    /**
     * Submitter: {@code slot}'s bounce buffer is staged ({@code staged} from
     * {@link SlotTable#stageBounce}, not NO_BUDGET): a write waits for its copy at the next
     * submit, a read is queued; out of memory fails it alone.
     */
    private void bounced(int slot, int staged) {
        if (staged == SlotTable.NO_MEMORY) {
            failLocally(slot, -Errno.ENOMEM);
        } else if (slots.op(slot) == SlotTable.OP_WRITE) {
            staging.add(slot);
        } else {
            enqueueTransfer(slot, false, BOUNCE);
        }
    }

    /** Submitter: stages waiting bounced transfers, in order, while the budget covers them. */
    private void retryWaiting() {
        while (!waiting.isEmpty()) {
            int staged = slots.stageBounce(waiting.peek());
            if (staged == SlotTable.NO_BUDGET) {
                return;
            }
            bounced(waiting.take(), staged);
        }
    }

    /**
     * Submitter: copies the staged writes' data into their bounce buffers, one batch, and queues
     * each, or fails it alone (EFAULT: its guest memory faulted).
     */
    private void stageWrites() {
        int n = staging.size();
        stager.stageWrites(staging, n);
        for (int i = 0; i < n; i++) {
            int slot = staging.take();
            long result = stager.result(slot);
            if (result == 0) {
                enqueueTransfer(slot, true, BOUNCE);
            } else {
                failLocally(slot, result);
            }
        }
    }

    /** Bounced transfers waiting for bounce memory (tests). */
    final int waitingForBounce() {
        return waiting.size();
    }

    @Override
    public final int prepareFlush(long userData) {
        if (closed) {
            return -Errno.EBADF;
        }
        int slot = slots.acquire();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        slots.begin(slot, SlotTable.OP_FLUSH, userData, 0, 0);
        enqueueFlush(slot);
        return 0;
    }

    @Override
    public final int prepareDiscard(long offset, long length, long userData) {
        return prepareZeroing(SlotTable.OP_DISCARD, offset, length, userData);
    }

    @Override
    public final int prepareWriteZeroes(long offset, long length, boolean mayUnmap, long userData) {
        return prepareZeroing(mayUnmap ? SlotTable.OP_WRITE_ZEROES_UNMAP : SlotTable.OP_WRITE_ZEROES,
                offset, length, userData);
    }

    private int prepareZeroing(int op, long offset, long length, long userData) {
        if (closed) {
            return -Errno.EBADF;
        }
        if (image != null && image.readOnly()) {
            return -Errno.EROFS;
        }
        if (image != null && !image.contains(offset, length)) {
            return -Errno.EINVAL;
        }
        int slot = slots.acquire();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        slots.begin(slot, op, userData, offset, length);
        if (length == 0 || (op == SlotTable.OP_DISCARD && image != null && image.discardIsNoOp())) {
            failLocally(slot, 0); // nothing to do (an advisory DISCARD where holes cannot be punched)
        } else {
            enqueueZeroing(slot);
        }
        return 0;
    }

    /** Submitter: completes {@code slot} with {@code result} at the next submit, never reaching the kernel. */
    final void failLocally(int slot, long result) {
        slots.op(slot, SlotTable.OP_FAILED);
        slots.result(slot, result);
        queueLocally(slot);
    }

    /** Submitter: {@code slot} will be performed by {@link #performLocally} at the next submit. */
    final void queueLocally(int slot) {
        local.add(slot);
    }

    /** Submitter: {@code slot} goes to the helper thread ({@link #performOffloaded}) at the next submit. */
    final void queueOffloaded(int slot) {
        blocking.add(slot);
    }

    /**
     * Reaper: an operation already counted in flight (it came back from the kernel) must be
     * finished by the helper thread instead (io_uring's refused FALLOCATE).
     */
    final void reOffload(int slot) {
        Offload helper = offload();
        helper.offer(slot);
        helper.wake();
    }

    private Offload offload() {
        Offload helper = offload;
        if (helper == null) {
            synchronized (this) {
                helper = offload;
                if (helper == null) {
                    helper = new Offload(this, slots.depth(), "vblk-aio-offload-" + getClass().getSimpleName());
                    offload = helper;
                }
            }
        }
        return helper;
    }

    /** The helper thread, or null if nothing was ever offloaded (tests). */
    final Thread offloadThread() {
        Offload helper = offload;
        return helper == null ? null : helper.thread();
    }

    @Override
    public final int submit() {
        if (closed) {
            return -Errno.EBADF;
        }
        if (!waiting.isEmpty()) {
            retryWaiting();
        }
        if (!staging.isEmpty()) {
            stageWrites();
        }
        int taken = queuedCount() > 0 ? submitQueued() : 0;
        io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SUBMIT_RETURNED); // tests only: see FaultPoints
        if (!blocking.isEmpty()) {
            // After submitQueued: it may add a flush the kernel refused. Counted in flight by
            // the helper's queue as each is handed over.
            Offload helper = offload();
            int handed = 0;
            while (!blocking.isEmpty()) {
                helper.offer(blocking.take());
                handed++;
            }
            helper.wake();
            taken = Math.max(taken, 0) + handed;
        }
        int done = 0;
        while (!local.isEmpty()) {
            int slot = local.take();
            slots.result(slot, performLocally(slot));
            deferred.offer(slot);
            done++;
        }
        if (done > 0 && !submitterReaps) {
            signalCompletions();
        }
        if (taken < 0) {
            return done > 0 ? done : taken;
        }
        return taken + done;
    }

    /**
     * Submitter: queues a finished slot (result stored) for the reaper (counted in flight until
     * reaped). The caller signals once for all it deferred.
     */
    final void deferCompletion(int slot) {
        deferred.offer(slot);
    }

    /** The largest operation that may be bounced. */
    final long maxBounceBytes() {
        return maxBounceBytes;
    }

    /** Whether bounce copies go through the kernel (tests). */
    final boolean kernelCopy() {
        return copier.kernelCopy();
    }

    @Override
    public final boolean reapOnSubmittingThread() {
        submitterReaps = true;
        return true;
    }

    @Override
    public final boolean completionsReady() {
        return submitterReaps && !deferred.isEmpty();
    }

    @Override
    public final int pendingSubmit() {
        return queuedCount() + local.size() + blocking.size() + waiting.size() + staging.size();
    }

    /**
     * Derived (see the class comment): taken by the kernel, the workers or the helper thread and
     * not given back, plus finished and not yet delivered (deferred, or a bounced read's copy
     * back). Exact on the submitting/reaping thread; from another thread a moment's view. 0
     * once closed.
     */
    @Override
    public final int inFlight() {
        if (closed) {
            // Nothing will be reaped any more; and an undrained close's reaper (Undrained) may
            // unmap the rings at any time, so they are not read from another thread after close.
            return 0;
        }
        Offload helper = offload;
        return kernelInFlight() + deferred.size() + (helper == null ? 0 : helper.inFlight()) + copyOuts.size();
    }

    /**
     * Derived like {@link #inFlight()}: with nothing in flight, pending, waiting or staged, a
     * slot still out of the pool can only be one whose completion an exception cut off (taken
     * from the kernel or a queue and never finished), so it goes back. Covers every way a slot
     * travels here: the kernel (io_uring, Linux AIO), the workers, the helper thread.
     */
    @Override
    public final int reclaimLostSlots() {
        if (closed || inFlight() != 0 || pendingSubmit() != 0) {
            return 0;
        }
        return slots.reclaimTaken();
    }

    @Override
    public final int poll(CompletionSink sink, int max) {
        if (max <= 0) {
            return 0;
        }
        // Clear before looking: a producer that finds the flag clear after this signals again,
        // so nothing queued after our last look can go unsignalled (Dekker with SC volatiles).
        if ((boolean) SIGNALLED.getAndSet(this, false)) {
            eventRaised = true; // what raised it is taken below; the event stays raised until read
        }
        signal.onPoll();
        if (!copyOuts.isEmpty()) {
            finishCopyOuts(sink); // left by a poll an exception cut short; counted there
        }
        int n = 0;
        while (n < max) {
            int slot = deferred.poll();
            if (slot < 0) {
                break;
            }
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.REAP_TAKEN); // tests only: see FaultPoints
            complete(slot, slots.result(slot), sink);
            n++;
        }
        Offload helper = offload;
        if (helper != null) {
            while (n < max) {
                int slot = helper.pollDone();
                if (slot < 0) {
                    break;
                }
                io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.REAP_TAKEN); // tests only: see FaultPoints
                complete(slot, slots.result(slot), sink);
                n++;
            }
        }
        if (n < max) {
            int reaped = reapQueued(sink, max - n);
            if (reaped > 0) {
                eventRaised = true; // the kernel signalled the event for them (io_uring, Linux AIO)
            }
            n += reaped;
        }
        if (!copyOuts.isEmpty()) {
            finishCopyOuts(sink);
        }
        if (n == max && (!deferred.isEmpty() || hasQueuedCompletions() || (helper != null && helper.hasDone()))) {
            // The reaper may have reset the event before this poll: leave it set for the rest.
            signalCompletions();
        }
        return n;
    }

    /**
     * Reaper: finishes {@code slot}, which the caller has already taken from wherever it was
     * (the kernel's ring, a queue): frees the slot, then tells the sink (so a sink that prepares
     * at once finds the slot free). A bounced read with data waits for the copy back at the end
     * of this poll ({@link #finishCopyOuts}).
     */
    final void complete(int slot, long result, CompletionSink sink) {
        if (image != null && slots.op(slot) == SlotTable.OP_FLUSH) {
            result = image.flushCompleted(result); // a failed flush fails every later one (sticky)
        }
        if (result > 0 && slots.bounced(slot) && slots.op(slot) == SlotTable.OP_READ) {
            slots.result(slot, result);
            copier.expect(slot, result);
            copyOuts.add(slot);
            return;
        }
        long userData = slots.userData(slot);
        slots.release(slot);
        sink.complete(userData, result);
    }

    /**
     * Reaper: copies the bounced reads of this poll back into guest memory, one batch, and
     * delivers them: each with its read's result, or EFAULT when its guest memory faulted (the
     * caller reads that as a fault in guest memory); every other one intact.
     */
    private void finishCopyOuts(CompletionSink sink) {
        int n = copyOuts.size();
        copier.copyOut(copyOuts, n);
        for (int i = 0; i < n; i++) {
            int slot = copyOuts.take();
            long copied = copier.result(slot);
            long result = copied < 0 ? copied : slots.result(slot);
            long userData = slots.userData(slot);
            slots.release(slot);
            sink.complete(userData, result);
        }
    }

    /**
     * Reaper, before sleeping outside {@link #poll} (close): re-arms the coalesced signal and
     * resets the event, so the next completion wakes it.
     */
    final void rearmSignal() {
        SIGNALLED.setVolatile(this, false);
        signal.onPoll();
        EventFd event = signal.eventFd();
        if (event != null) {
            event.read();
        }
    }

    @Override
    public final boolean rearmCompletions() {
        // The flag is cleared before the event is read and the queues are looked at: a producer
        // that finds it clear signals again, so its completion is either seen below or raises
        // the event after this read (the same pairing as poll's).
        if ((boolean) SIGNALLED.getAndSet(this, false) || eventRaised) {
            eventRaised = false;
            signal.onPoll();
            EventFd event = signal.eventFd();
            if (event != null) {
                event.read();
            }
        }
        Offload helper = offload;
        return !deferred.isEmpty() || hasQueuedCompletions() || (helper != null && helper.hasDone()) || !copyOuts.isEmpty();
    }

    /** Raises the completion signal unless it is already raised since the reaper's last poll. */
    final void signalCompletions() {
        if (!(boolean) SIGNALLED.getAndSet(this, true)) {
            signal.signal();
        }
    }

    @Override
    public final EventFd completionEvent() {
        return signal.eventFd();
    }

    @Override
    public final int awaitCompletions(int timeoutMs) {
        Offload helper = offload;
        if (!deferred.isEmpty() || hasQueuedCompletions() || (helper != null && helper.hasDone()) || !copyOuts.isEmpty()) {
            return 1;
        }
        return awaitSignal(timeoutMs);
    }

    /** Waits for the completion signal (io_uring waits in its ring once it sleeps there). */
    int awaitSignal(int timeoutMs) {
        return signal.await(timeoutMs);
    }

    /**
     * Waits at most {@link Undrained#closeDrainNs()} ({@code vblk.aio.closeDrainMs}, 10 s) for
     * what the kernel holds: a back end whose kernel never answers (a hung FUSE or NFS file, a
     * frozen disk) must not hold its closer, and with it an export.remove or a shutdown, for
     * ever. Past that it returns undrained ({@link #closedDrained()} false) having freed nothing
     * the kernel may still write: slots, bounce buffers, rings, iocbs and the completion eventfd
     * stay, reachable in {@link Undrained}, until its reaper has seen the kernel finish them
     * (io_uring: its ring stays open, since closing it would only hand the wait to the kernel's
     * exit work; Linux AIO: io_destroy waits in the kernel for what is in flight, so it runs on
     * the reaper, never on the closer). The caller must leave the guest memory mapped (the engine
     * reports the device not quiesced) until {@link #whenDrained} says otherwise.
     */
    @Override
    public final void close() {
        closeWithin(Long.MAX_VALUE);
    }

    /** As {@link #close()}, waiting at most {@code timeoutNs} (and at most {@link Undrained#closeDrainNs()}). */
    @Override
    public final void closeWithin(long timeoutNs) {
        if (closed) {
            return;
        }
        undrained = CLOSING; // before closed: see CLOSING
        closed = true;
        // Operations prepared but never submitted never reached the kernel: drop them.
        local.clear();
        blocking.clear();
        waiting.clear();
        staging.clear();
        long waitNs = Math.min(Math.max(0, timeoutNs), Undrained.closeDrainNs());
        long start = System.nanoTime();
        Offload helper = offload;
        // A fallocate or fdatasync of the helper thread the kernel does not finish in time keeps
        // its slot (and the rest) for the reaper, like an operation with the kernel.
        // An idle helper is only parked: it gets its own bound to wake and end, not what is left
        // of the caller's deadline (a 1 ms join there lost to a slow wake-up would report a
        // drained close undrained: the export keeps its locks, the unmap waits for the reaper).
        long helperWaitMs = TimeUnit.NANOSECONDS.toMillis(waitNs);
        if (helper != null && helper.idle()) {
            helperWaitMs = Math.max(helperWaitMs, IDLE_HELPER_STOP_MS);
        }
        boolean helperStopped = helper == null || helper.stop(this::dropCompletion, helperWaitMs);
        int awaited = helperStopped ? awaitQueued(Math.max(0, waitNs - (System.nanoTime() - start))) : TIMED_OUT;
        if (awaited == TIMED_OUT && dropUnstarted() > 0 && helperStopped) {
            // Only now, past the wait: a close that drains still performs everything submitted.
            // The dropped ones came back as completions: drop those, and see whether that was all.
            awaited = awaitQueued(0);
        }
        while (deferred.poll() >= 0) {
            // Finished, and nobody will receive it.
        }
        while (!copyOuts.isEmpty()) {
            slots.release(copyOuts.take());
        }
        if (awaited == AWAITED && kernelInFlight() == 0) {
            release();
            slots.close();
            signal.close();
            releaseImage(true); // nothing reaches the file any more: a deferred image close happens now
            undrained = DRAINED;
            runDrainedActions();
            return;
        }
        // Still in flight: the kernel may still write into those slots' buffers.
        undrained = helperStopped ? SLOTS_KEPT : HELPER_STUCK;
        keepForReaper();
        int inFlight = kernelInFlight() + (helperStopped ? 0 : helper.inFlight());
        if (awaited == REFUSED) {
            // io_uring's single-issuer ring closed by another thread than its owner, which alone
            // can have completions posted, after a drain gave requests up: no thread here can
            // wait. The ring goes (the kernel's exit work finishes what it holds); the slots stay
            // until the kernel has freed the ring (its exit watch), which the reaper waits for.
            release();
            ringGone = true;
            Undrained.kept(this, inFlight, System.nanoTime() - start, watchesRingExit());
            return;
        }
        Undrained.kept(this, inFlight, System.nanoTime() - start, true);
    }

    /**
     * The bound on stopping an idle helper thread at close, whatever the caller's deadline: it
     * is parked, so it ends as soon as it is scheduled; the bound only guards the unforeseen.
     */
    static final long IDLE_HELPER_STOP_MS = 10_000;

    /** {@link #reapStep}: the kernel finished; everything was freed. */
    static final int REAPED = 0;
    /** {@link #reapStep}: still with the kernel; look again later. */
    static final int STILL_HELD = 1;
    /** {@link #reapStep}: cannot be awaited from here; kept for the JVM's life. */
    static final int KEPT_FOR_EVER = 2;

    /**
     * One look of the shared reaper of undrained closes ({@link Undrained}): waits at most
     * {@code sliceNs} for the helper thread's call and what the kernel holds; once nothing is
     * in flight, frees everything (the reaper then runs the {@link #whenDrained} actions). If the wait is
     * refused (a single-issuer ring's non-owner) the kernel resources go (the kernel keeps its
     * own references to the ring and file until its exit work has finished them) and the slots
     * stay allocated until the kernel has freed the ring ({@link #ringExited}; for ever where
     * that cannot be told). Only the reaper calls it: the back end is closed, and its closer
     * handed it over.
     */
    final int reapStep(long sliceNs) {
        if (ringGone) {
            return ringExited(sliceNs) ? freed() : STILL_HELD;
        }
        Offload helper = offload;
        if (helper != null && !helper.stop(this::dropCompletion, Math.max(1, TimeUnit.NANOSECONDS.toMillis(sliceNs)))) {
            return STILL_HELD;
        }
        int awaited = awaitQueued(sliceNs);
        if (awaited == TIMED_OUT) {
            return STILL_HELD;
        }
        boolean drained = awaited == AWAITED && kernelInFlight() == 0;
        release();
        if (!drained) {
            if (!watchesRingExit()) {
                return KEPT_FOR_EVER;
            }
            ringGone = true; // refused (a single-issuer ring's non-owner): wait for the kernel to free it
            return ringExited(sliceNs) ? freed() : STILL_HELD;
        }
        return freed();
    }

    /** The kernel is done with everything: the rest is freed (the reaper then runs the whenDrained actions). */
    private int freed() {
        slots.close();
        signal.close();
        if (fileReleased()) {
            releaseImage(false); // on the reaper: a deferred image close, without its fdatasync
        }
        undrained = DRAINED;
        return REAPED;
    }

    /**
     * Set once {@link #release()} closed the rings while the kernel still held operations (a wait
     * the kernel refused): the reaper then only watches for the kernel's exit ({@link #ringExited}).
     */
    private boolean ringGone;

    /**
     * Whether {@link #ringExited} can tell when the kernel has let go of rings released with
     * operations in flight (io_uring's single-issuer ring); else such a back end is kept for the
     * JVM's life. False by default.
     */
    boolean watchesRingExit() {
        return false;
    }

    /**
     * After {@link #release()} with operations still in flight: whether the kernel has freed
     * everything of the rings since (so nothing can write into the slots' buffers any more),
     * waiting at most {@code timeoutNs}. Only when {@link #watchesRingExit()}; the reaper only.
     */
    boolean ringExited(long timeoutNs) {
        return false;
    }

    /** {@link #whenDrained} actions waiting for the back end to be closed drained (under {@link #drainedLock}). */
    private java.util.ArrayList<Runnable> drainedActions;
    private final Object drainedLock = new Object();

    @Override
    public final void whenDrained(Runnable action) {
        java.util.Objects.requireNonNull(action, "action");
        synchronized (drainedLock) {
            if (!closedDrained()) {
                if (drainedActions == null) {
                    drainedActions = new java.util.ArrayList<>();
                }
                drainedActions.add(action);
                return;
            }
        }
        action.run();
    }

    /**
     * After {@code undrained} turned DRAINED (which a {@link #whenDrained} that finds it so no
     * longer queues behind): runs the queued actions in order, each whatever the others did.
     */
    final void runDrainedActions() {
        java.util.ArrayList<Runnable> actions;
        synchronized (drainedLock) {
            actions = drainedActions;
            drainedActions = null;
        }
        if (actions == null) {
            return;
        }
        for (Runnable action : actions) {
            try {
                action.run();
            } catch (RuntimeException | Error e) {
                System.getLogger(IoBackend.class.getName()).log(System.Logger.Level.WARNING,
                        this + ": an action waiting for its drained close failed", e);
            }
        }
    }

    @Override
    public final boolean closedDrained() {
        return closed && undrained == DRAINED;
    }

    /** Whether {@link #close()} left the slots allocated because the kernel still held some (tests). */
    final boolean slotsKeptAfterClose() {
        return undrained == SLOTS_KEPT;
    }

    /** Reaper during close: a completion, taken, that nobody will receive. */
    final void dropCompletion(int slot) {
        slots.release(slot);
    }

    @Override
    public String toString() {
        return getClass().getSimpleName() + "[depth " + depth() + ", in flight " + inFlight() + ", " + image + "]";
    }
}
