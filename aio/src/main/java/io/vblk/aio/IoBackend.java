package io.vblk.aio;

import io.vblk.sys.EventFd;

/**
 * An I/O back end: operations are prepared into preallocated in-flight slots, handed to the
 * kernel (or a thread pool) as one batch by {@link #submit()}, and reaped without blocking by
 * {@link #poll(CompletionSink, int)}. Nothing on these paths allocates, locks or logs.
 *
 * <h2>Contract</h2>
 * <ul>
 *   <li>Every prepare that returns 0 is "accepted" and yields exactly one completion through
 *       {@link #poll}, carrying its {@code userData}: never lost, never doubled, also when the
 *       kernel takes a batch only partly or answers EAGAIN (the rest stays pending for the next
 *       {@link #submit()}), and also for operations a back end performs synchronously or whose
 *       submission failed (they complete with {@code -errno} through the same path).</li>
 *   <li>A prepare that returns {@code -errno} affects only that operation: {@code -EAGAIN} no
 *       free slot, {@code -EINVAL} a range outside the image, a misaligned O_DIRECT offset or
 *       length, or more segments than a slot holds, {@code -EROFS} a change to a read-only
 *       image, {@code -EBADF} after {@link #close()}.</li>
 *   <li>Threads: prepare, {@link #submit()}, {@link #freeSlots()} and {@link #pendingSubmit()}
 *       belong to one submitting thread; {@link #poll} to one reaping thread, which may be the
 *       same one (shared mode) or another (dedicated mode). {@link #inFlight()} may be read from
 *       anywhere. {@link #close()} is called once both have stopped.</li>
 * </ul>
 *
 * <h2>Sleeping</h2>
 * {@link #completionEvent()} becomes readable when completions may be available. A reaper that
 * found nothing reads it (to reset it), polls once more (a completion may have landed between
 * the two), and only then sleeps on it with poll/epoll. If {@link #poll} stopped at {@code max}
 * while more completions were ready, the event is signalled again so no completion is stranded.
 */
public interface IoBackend extends Drainable, AutoCloseable {
    /** The most operations in flight at once (preallocated slots). */
    int depth();

    /** Slots available to prepare into now. */
    int freeSlots();

    /** Prepares a vectored read of {@code buffers.totalLength()} bytes at {@code offset}. */
    int prepareRead(long offset, IoVector buffers, long userData);

    /** Prepares a vectored write; {@code -EROFS} on a read-only image (no write reaches it). */
    int prepareWrite(long offset, IoVector buffers, long userData);

    /** Prepares a flush: completes once every write completed before it is durable (fdatasync). */
    int prepareFlush(long userData);

    /**
     * Prepares a discard: advisory, the range is deallocated where possible (a punched hole, BLKDISCARD)
     * and never written; reads of it may return the old data or zeros afterwards.
     */
    int prepareDiscard(long offset, long length, long userData);

    /**
     * Prepares a write-zeroes: reads of the range return zeros afterwards. With {@code mayUnmap}
     * the range may be deallocated (a punched hole); without it the blocks stay allocated.
     */
    int prepareWriteZeroes(long offset, long length, boolean mayUnmap, long userData);

    /**
     * Hands every prepared operation to the kernel with one system call (none for the null and
     * thread back ends). Returns the number of operations taken (so no longer pending), or
     * {@code -errno} (such as {@code -EAGAIN}) when none could be taken; those stay pending.
     */
    int submit();

    /** Operations prepared and not yet taken by {@link #submit()}. */
    int pendingSubmit();

    /** Operations submitted and not yet reaped by {@link #poll}. */
    int inFlight();

    /**
     * After {@link #close()}: whether the close confirmed that nothing this back end handed to
     * the kernel can still reach the image (every operation finished, or was dropped before the
     * kernel saw it). False before close, and when close left operations with the kernel (a
     * stranded ring slot, a fallocate or fdatasync that did not finish): then the image's locks
     * must not be released explicitly, but go with the descriptor when the kernel lets go of
     * it, so that nobody opens the image for writing while stale writes may still land. It
     * turns true once a reaper has seen the kernel finish what such a close left (see {@link
     * IoBackends#undrainedBackends()}). True by default (back ends with no kernel I/O of their
     * own on a local image).
     */
    default boolean closedDrained() {
        return true;
    }

    /**
     * Runs {@code action} once this back end is closed and {@link #closedDrained()} holds: at
     * once, on this thread, when it already does; otherwise right after a close confirms it, or
     * after the reaper of an undrained close (see {@link IoBackends#undrainedBackends()}) saw the
     * kernel finish what the close left and released the back end, on the reaper's thread. Never
     * for a back end kept for the JVM's life. For what must outlive everything the kernel may
     * still write: the mapping of the memory the operations point into (a guest's), the account
     * of the pages its ring pins. Control path only; {@code action} must be short and must not
     * block. By default: at once when {@link #closedDrained()} holds, else never.
     */
    default void whenDrained(Runnable action) {
        if (closedDrained()) {
            action.run();
        }
    }

    /**
     * Reaping thread: when nothing is in flight and nothing pending submit, every slot still
     * taken belongs to a completion lost to an exception the JVM threw inside {@link #poll} or
     * {@link #submit} (a guest-memory fault delivered late: engine GuestFaults); gives those
     * back to the pool and returns how many. Otherwise, or when none is lost, returns 0. Off
     * the data path (a drain that gave requests up).
     */
    default int reclaimLostSlots() {
        return 0;
    }

    /**
     * Reaps up to {@code max} completions without blocking, calling {@code sink} for each, and
     * returns how many. A slot is free again before its completion reaches the sink, so the sink
     * may prepare the next operation (in shared mode).
     */
    int poll(CompletionSink sink, int max);

    /**
     * An eventfd that becomes readable when completions may be available; the reaper reads it to
     * reset it before polling. Null when the platform has no eventfd (the thread back end off
     * Linux): use {@link #awaitCompletions(int)} there.
     */
    EventFd completionEvent();

    /**
     * Offers to reap on the submitting thread: the caller promises to call {@link #poll} on the
     * thread that submits and to check {@link #completionsReady()} before it sleeps on
     * {@link #completionEvent()}. A back end that accepts (returns true) then no longer raises its
     * completion event for operations it finishes inside {@link #submit()} (everything of the null
     * back end, operations that failed before reaching the kernel): the submitter finds them
     * through {@link #completionsReady()}, which saves an eventfd write per submit and the
     * wake-up it causes. Call once, before the first prepare. By default the offer is declined.
     */
    default boolean reapOnSubmittingThread() {
        return false;
    }

    /**
     * Whether completions wait for {@link #poll} that raised no completion event (only after
     * {@link #reapOnSubmittingThread()} accepted; false otherwise). Submitting thread.
     */
    default boolean completionsReady() {
        return false;
    }

    /**
     * Reaper, about to sleep on {@link #completionEvent()} after polls that reaped: resets the
     * event when a completion already reaped may have left it raised (the kernel signals it for
     * every completion it posts, whether or not a poll then takes it from the ring in user
     * space), so the sleep does not wake at once to nothing; then returns whether completions
     * are ready to poll after all (the caller polls instead of sleeping). Reset first and looked
     * second, so a completion that lands after the look raises the event anew and wakes the
     * sleep. At most one read(2) per call, none when no signal can be pending. Default: leaves
     * the event as it is and returns false (a raised event then only costs a spurious wake-up).
     */
    default boolean rearmCompletions() {
        return false;
    }

    /**
     * Resets the completion source after it woke the caller, before {@link #poll}: reads the
     * eventfd. A back end whose source is not an eventfd (an epoll descriptor over sockets)
     * overrides this.
     */
    @Override
    default void acknowledgeCompletions() {
        EventFd event = completionEvent();
        if (event != null) {
            event.read();
        }
    }

    /**
     * Registers host memory ranges (guest memory: {@code addresses[i]}, {@code lengths[i]} bytes)
     * as the back end's fixed buffers, replacing any registered before: a one-segment transfer
     * whose buffer lies wholly inside one of them then goes without the kernel pinning its pages
     * per operation (io_uring READ_FIXED/WRITE_FIXED). Everything else goes as before, so the
     * ranges are a hint, never a condition of correctness. Registration pins the ranges' pages
     * (resident, unmovable) until {@link #unregisterBuffers()} or {@link #close()}; the caller
     * decides whether that is acceptable ({@link FixedBufferMode}).
     *
     * <p>The submitting thread, or another thread while the submitting thread prepares nothing
     * (the engine registers from the control thread with every queue of the device stopped, since
     * pinning a fresh table takes seconds, and publishes the result through the I/O thread's
     * inbox when the queues restart). Operations prepared and not yet submitted, and those in
     * flight, are unaffected (they keep the memory they were prepared with). Re-register (or
     * unregister) before the ranges are unmapped and
     * before new memory may appear at their addresses: the registration holds the pages that
     * were mapped at registration time.
     *
     * @return the number of buffers registered (ranges above 1 GiB count one per GiB), or
     *         {@code -errno} when nothing was registered: {@code -EOPNOTSUPP} for a back end
     *         without fixed buffers (the default), or the kernel's refusal ({@code -EFAULT}, {@code -ENOMEM}, ...); see
     *         {@link #bufferRegistration()} for why
     * @throws IllegalArgumentException for a non-positive address or length or a range that wraps
     */
    default int registerBuffers(long[] addresses, long[] lengths) {
        return -io.vblk.sys.Errno.EOPNOTSUPP;
    }

    /** Drops the fixed buffers (their pages are unpinned); submitting thread. Nothing by default. */
    default void unregisterBuffers() {
    }

    /** What is registered as fixed buffers now, or why nothing is (for logs and tests). */
    default String bufferRegistration() {
        return "not supported by this back end";
    }

    /**
     * Whether this back end is an io_uring ring set up single-issuer with deferred task running
     * ({@link BackendOptions#singleIssuer()}, accepted by the kernel): the first thread that
     * submits or sleeps in it owns it, and only that thread can submit, have completions posted
     * and reap; the kernel refuses the others (EEXIST). Registrations from another thread go
     * through a staging ring and reach the ring at the owner's next {@link #poll}. False by default.
     */
    default boolean singleIssuer() {
        return false;
    }

    /**
     * Whether a registration (or unregistration) made by another thread than a single-issuer
     * ring's owner still waits for the owner's next {@link #poll} to reach the ring. Any thread.
     */
    default boolean registrationPending() {
        return false;
    }

    /**
     * Switches the reaping thread's sleep into this back end's ring ({@link RingSleep}), where the
     * back end is a kernel ring that supports it (io_uring on Linux 5.13+); null otherwise, and
     * then nothing changes. After a switch the kernel's completions no longer signal
     * {@link #completionEvent()}: the thread must sleep through the returned {@link RingSleep}
     * (and {@link #awaitCompletions} waits in the ring). Call once, on the thread that submits and
     * reaps, or before it starts.
     */
    default RingSleep sleepInRing() {
        return null;
    }

    /**
     * Blocks up to {@code timeoutMs} (-1: forever) until completions may be available, without
     * consuming them. Returns 1 if they may be, 0 on timeout, or {@code -errno}. Works on every
     * platform; on Linux it waits on {@link #completionEvent()}.
     */
    int awaitCompletions(int timeoutMs);

    /**
     * Waits for every operation in flight to complete (their completions are dropped: drain
     * first to receive them), discards operations never submitted, and frees the slots, rings
     * and descriptors. Idempotent. The kernel back ends wait at most {@code vblk.aio.closeDrainMs}
     * (10 s): past it they return undrained ({@link #closedDrained()} false), keeping whatever
     * the kernel may still write until it has finished, and the caller must keep the memory the
     * operations point into (the guest's) mapped.
     *
     * <p>A back end over an {@link Image} holds it from its creation until this close has
     * drained (an undrained close: until the kernel let go): an {@link Image#close()} before
     * that is deferred (it returns at once) and really happens here, so the back end's I/O
     * never reaches a file that reuses the image's descriptor number. Close the back end, or
     * the image stays open.
     */
    @Override
    void close();

    /**
     * As {@link #close()}, waiting at most {@code timeoutNs} for what the kernel holds (and never
     * longer than {@link #close()} would): a caller with a deadline of its own (a device's
     * {@code close(ms)}) passes what is left of it. Past it the back end returns undrained as
     * {@link #close()} does, freeing nothing the kernel may still write. By default {@link #close()}.
     */
    default void closeWithin(long timeoutNs) {
        close();
    }
}
